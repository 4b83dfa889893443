"""Resumable batch runs over folders: `qformer wildlife DIR --out results.json [--resume | --overwrite]`.

Finished images are checkpointed every `checkpoint_every` images (atomically) next to the output, so
a run killed at any moment resumes with no image lost and none done twice. Nothing is replaced without
being asked: an existing results file needs `--resume` (add what is new) or `--overwrite`, and a
damaged results or checkpoint file is named and left as it is. Under `accelerate launch` each process
takes every n-th file and keeps its own checkpoint; the main process merges at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Sequence

from tqdm.auto import tqdm

from .pipeline import WildlifePipeline
from .results import ImageResult, from_megadetector, to_megadetector, write_json


class ResultsFileError(ValueError):
    """A results or checkpoint file that cannot be read; it is kept, and the run does not touch it."""


def partial_path(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.name}.rank{rank}.partial.json")


def check_output(out: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Validate `--out` before any work: a file we can write beside (a probe file is written and
    removed), not replacing finished results or an unfinished run unless asked, and with `--resume`
    every earlier result readable. Raises FileExistsError, OSError, ValueError or ResultsFileError."""
    out = Path(out)
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other: keep the results, or replace them")
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder; give a file name, e.g. {out / 'results.json'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.with_name(f".{out.name}.{os.getpid()}.probe")
        probe.write_bytes(b"")  # what the results file needs: a file created, written and renamed there
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"--out {out}: cannot write there ({e.strerror or e}); choose another place") from None
    if resume:
        if out.exists():
            _finished_results(out)
        if partial_path(out, 0).exists():
            _checkpointed(partial_path(out, 0))
    if overwrite or resume:
        return out
    if out.exists():
        raise FileExistsError(f"{out} already holds results: add --resume to keep them and do only new images, "
                              "or --overwrite to replace them")
    if partial_path(out, 0).exists():
        raise FileExistsError(f"{partial_path(out, 0)} holds an unfinished run: add --resume to continue it, "
                              "or --overwrite to start over")
    return out


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("the top level is not an object")
        return data
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ResultsFileError(f"{path}: the {what} is damaged ({e}); it is kept as it is. Move it away and "
                               "run again with --overwrite to start over, or restore it from a backup") from e


def _finished_results(out: Path) -> dict[str, dict]:
    """Results of a finished run in `out`, by file, as the checkpoint keeps them."""
    try:
        results = from_megadetector(_read_json(out, "results file"))
        to_megadetector(results, detector="", classifier="")  # every field of the kind the file needs
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, ResultsFileError):
            raise
        raise ResultsFileError(f"{out}: not a results file this program wrote ({e}); it is kept as it is. "
                               "Choose another --out, or --overwrite to replace it") from e
    return {r.file: r.to_dict() for r in results}


def _checkpointed(partial: Path) -> dict[str, dict]:
    done = _read_json(partial, "checkpoint of an unfinished run").get("done")
    try:
        to_megadetector([ImageResult.from_dict(entry) for entry in done.values()], detector="", classifier="")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ResultsFileError(f"{partial}: the checkpoint of an unfinished run is damaged (bad entry: {e!r}); it is "
                               "kept as it is. Move it away and run again with --overwrite to start over") from e
    return done


def run_batch(pipeline: WildlifePipeline, images: Sequence[str | Path], out: str | Path, resume: bool = False,
              checkpoint_every: int = 50, batch_size: int = 8, workers: int = 1, progress: bool = True,
              overwrite: bool = False) -> dict:
    state = _processes()
    out = check_output(out, resume, overwrite)
    # a finished run in `out` keeps every result it has, even of files this run does not name
    finished = _finished_results(out) if resume and out.exists() else {}
    found = [str(image) for image in images]  # the files to run, as `find_images` lists a command line's
    files = [f for f in found if f not in finished][state.process_index :: state.num_processes]
    partial = partial_path(out, state.process_index)
    done: dict[str, dict] = {}
    if partial.exists() and not overwrite:
        if not resume:
            raise FileExistsError(f"{partial} holds an unfinished run: add --resume to continue it, or --overwrite")
        done = _checkpointed(partial)
    todo = [f for f in files if f not in done]
    bar = tqdm(total=len(files), initial=len(files) - len(todo), unit="img", desc="wildlife",
               disable=not progress or not state.is_local_main_process)
    since_checkpoint = 0
    for result in _results(pipeline, todo, batch_size, workers):
        done[result.file] = result.to_dict()
        since_checkpoint += 1
        bar.update()
        if since_checkpoint >= checkpoint_every:
            write_json({"done": done}, partial)
            since_checkpoint = 0
    bar.close()
    write_json({"done": done}, partial)
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}
    merged: dict[str, dict] = dict(finished)
    for rank in range(state.num_processes):
        merged.update(_checkpointed(partial_path(out, rank)))
    order = list(finished) + [f for f in found if f not in finished]
    results = [ImageResult.from_dict(merged[f]) for f in order if f in merged]
    detector, classifier, metadata = describe_run(pipeline)
    data = to_megadetector(results, detector=detector, classifier=classifier, detector_metadata=metadata)
    write_json(data, out)
    for rank in range(state.num_processes):
        partial_path(out, rank).unlink(missing_ok=True)
    return data


def _results(pipeline, files: list[str], batch_size: int, workers: int) -> Iterator[ImageResult]:
    """The pipeline's results in order, as they come; an engine that schedules its own batches (and
    has no `stream`) is handed its `chunk_size` files at a time."""
    if hasattr(pipeline, "stream"):
        yield from pipeline.stream(files, workers=workers)
        return
    step = getattr(pipeline, "chunk_size", batch_size)
    for start in range(0, len(files), step):
        yield from pipeline(files[start : start + step], workers=workers)


class _OneProcess:
    """A run without torch is one process (torchrun, which would start more, needs torch)."""
    process_index, num_processes, is_main_process, is_local_main_process = 0, 1, True, True

    def wait_for_everyone(self) -> None:
        pass


def _processes():
    """accelerate's view of this run's processes (torchrun's, or one), or one process without torch."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return _OneProcess()
    import torch
    from accelerate import PartialState

    # cpu=True lets torchrun's CPU processes form a (gloo) group instead of each running alone
    return PartialState(cpu=not torch.cuda.is_available())


def describe_run(pipeline) -> tuple[str, str, dict | None]:
    """(detector, classifier, detector metadata) for the results file; an engine that runs the pipeline
    elsewhere says it through its own `describe_run()`."""
    if hasattr(pipeline, "describe_run"):
        return pipeline.describe_run()
    # the detector's own threshold, as the format lets a batch file recommend one to downstream tools
    threshold = pipeline.detector.min_conf
    metadata = {"typical_detection_threshold": threshold} if threshold is not None else None
    return pipeline.detector.name, _describe(pipeline), metadata


def _describe(pipeline: WildlifePipeline) -> str:
    experts = {type(e).__name__ + ":" + getattr(getattr(e, "classifier", None), "name",
                                                "?") for e in pipeline.experts.values()}
    return f"coarse {getattr(pipeline.coarse.classifier, 'name', '?')}; experts {', '.join(sorted(experts))}"
