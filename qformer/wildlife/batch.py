"""Resumable batch runs over folders: `qformer wildlife DIR --out results.json [--resume]`.

Finished images are checkpointed every `checkpoint_every` images (atomically) next to the output, so
a run killed at any moment resumes with no image lost and none done twice. Under `accelerate launch`
each process takes every n-th file and keeps its own checkpoint; the main process merges at the end.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from .megadetector import to_megadetector, write_json
from .pipeline import ImageResult, WildlifePipeline

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def list_images(targets: Sequence[str | Path]) -> list[str]:
    """Files named directly, and the image files under folders (recursively), sorted."""
    found = []
    for target in map(Path, targets):
        if target.is_dir():
            found += [str(p) for p in sorted(target.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        elif target.exists():
            found.append(str(target))
        else:
            raise FileNotFoundError(f"{target}: no such file or folder")
    return found


def run_batch(pipeline: WildlifePipeline, targets: Sequence[str | Path], out: str | Path, resume: bool = False,
              checkpoint_every: int = 50, batch_size: int = 8, workers: int = 1, progress: bool = True) -> dict:
    import torch
    from accelerate import PartialState

    # cpu=True lets torchrun's CPU processes form a (gloo) group instead of each running alone
    state = PartialState(cpu=not torch.cuda.is_available())
    out = Path(out)
    files = list_images(targets)[state.process_index :: state.num_processes]
    partial = out.with_name(f"{out.name}.rank{state.process_index}.partial.json")
    done: dict[str, dict] = {}
    if partial.exists():
        if not resume:
            raise FileExistsError(f"{partial} holds an unfinished run: add --resume to continue it, or delete it")
        done = json.loads(partial.read_text())["done"]
    todo = [f for f in files if f not in done]
    kill_after = int(os.environ.get("QFORMER_TEST_KILL_AFTER_IMAGES", "0"))  # fault injection, for tests
    bar = tqdm(total=len(files), initial=len(files) - len(todo), unit="img", desc="wildlife",
               disable=not progress or not state.is_local_main_process)
    since_checkpoint = 0
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        for result in pipeline(chunk, workers=workers):
            done[result.file] = result.to_dict()
        since_checkpoint += len(chunk)
        bar.update(len(chunk))
        if since_checkpoint >= checkpoint_every:
            write_json({"done": done}, partial)
            since_checkpoint = 0
            if kill_after and len(done) >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
    bar.close()
    write_json({"done": done}, partial)
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}
    merged: dict[str, dict] = {}
    for rank in range(state.num_processes):
        merged.update(json.loads(out.with_name(f"{out.name}.rank{rank}.partial.json").read_text())["done"])
    order = list_images(targets)
    results = [ImageResult.from_dict(merged[f]) for f in order if f in merged]
    data = to_megadetector(results, detector=type(pipeline.detector).__name__, classifier=_describe(pipeline))
    write_json(data, out)
    for rank in range(state.num_processes):
        out.with_name(f"{out.name}.rank{rank}.partial.json").unlink(missing_ok=True)
    return data


def _describe(pipeline: WildlifePipeline) -> str:
    experts = {type(e).__name__ + ":" + getattr(getattr(e, "classifier", None), "name", "?") for e in pipeline.experts.values()}
    return f"coarse {getattr(pipeline.coarse.classifier, 'name', '?')}; experts {', '.join(sorted(experts))}"
