"""Training checkpoints that are complete, belong to their run, and never load half-written.

Each checkpoint is written to `step-N.tmp` and renamed into place; its last file is `manifest.json`,
with the size and SHA-256 of every other file and a fingerprint of the resolved recipe. Resuming
checks all of it: a checkpoint with a missing, truncated or changed file is reported, left as it is,
and the previous complete one is used; a checkpoint of another recipe is refused unless asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from qformer.bridge.checkpoint import bridge_state_dict, load_bridge_state, read_bridge

from .recipe import TrainConfig

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
MANIFEST = "manifest.json"
RNG_FILE = "rng_state_{rank}.json"  # every generator a step draws from, as plain numbers (no pickle)
# Fields that do not change what a step computes: a resumed run may differ in them (train longer with a
# larger max_steps, save or evaluate more often, move the cache or the run's folder).
RUN_LENGTH_AND_BOOKKEEPING = ("output_dir", "max_steps", "save_every", "keep_last", "eval_every", "log_every",
                              "feature_cache", "max_bad_steps")
EVALUATION_DATA = ("eval", "eval_split", "eval_size")


class ResumeError(ValueError):
    """A resume that would continue the wrong run, said with what to do."""


class NoCompleteCheckpoint(ResumeError):
    """Every checkpoint there is damaged or incomplete (they are kept as they are)."""


def recipe_fingerprint(config: TrainConfig) -> str:
    """A hash of what decides the training trajectory: model, data, optimiser, seed, stage, precision."""
    recipe = {k: v for k, v in config.to_dict().items() if k not in RUN_LENGTH_AND_BOOKKEEPING}
    recipe["data"] = {k: v for k, v in recipe["data"].items() if k not in EVALUATION_DATA}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, fingerprint: str, num_processes: int) -> None:
    files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(folder.iterdir()) if p.is_file()}
    manifest = {"recipe_sha256": fingerprint, "num_processes": num_processes, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))


def checkpoint_problem(folder: Path, num_processes: int) -> str | None:
    """Why `folder` cannot be resumed from, or None when every file is there and unchanged."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except FileNotFoundError:
        return f"it has no {MANIFEST} (its save was interrupted)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its {MANIFEST} is damaged ({e})"
    # the model and optimizer files differ under FSDP and DeepSpeed; the manifest lists whichever were written
    needed = {STATE_FILE, *(RNG_FILE.format(rank=rank) for rank in range(num_processes))}
    for name in sorted(needed - set(files)):
        return f"it never had {name}"
    for name, expected in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["size"] or _sha256(path) != expected["sha256"]:
            return f"{name} was changed or truncated after it was saved"
    return None


def finished_checkpoints(out: Path) -> list[Path]:
    """`step-N` folders, oldest first (not the `.tmp` of an unfinished save, nor one set aside as damaged)."""
    return sorted(p for p in (out / CHECKPOINTS).glob("step-*") if p.is_dir() and re.fullmatch(r"step-\d+", p.name))


def find_resumable(out: Path, config: TrainConfig, num_processes: int, any_recipe: bool, log=print) -> Path:
    """The newest complete checkpoint under `out`; damaged ones are reported and kept, never deleted."""
    candidates = finished_checkpoints(out)
    if not candidates:
        raise NoCompleteCheckpoint(f"--resume: no finished checkpoint under "
                                   f"{out / CHECKPOINTS}; start without --resume")
    for folder in reversed(candidates):
        problem = checkpoint_problem(folder, num_processes)
        if problem is not None:
            log(f"checkpoint {folder} cannot be used: {problem}. It is kept as it is; trying the one before it")
            continue
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest["recipe_sha256"] != recipe_fingerprint(config) and not any_recipe:
            raise ResumeError(
                f"--resume: {folder} was saved by a run of another recipe (see {out / 'recipe.resolved.json'}); "
                "resuming it would continue that run, not this one. Use another output_dir for this recipe, or add "
                "--resume-other-recipe to continue those weights with this recipe on purpose"
            )
        return folder
    raise NoCompleteCheckpoint(f"--resume: none of the {len(candidates)} checkpoint(s) under "
                               f"{out / CHECKPOINTS} is complete; "
                      "they are kept as they are. Start a new run in another output_dir")


def holds_earlier_run(out: Path) -> bool:
    return bool(finished_checkpoints(out)) or (out / "final").exists()


def save_checkpoint(accelerator: Accelerator, out: Path, step: int, state: dict, fingerprint: str,
                    keep_last: int) -> None:
    """Write to `step-N.tmp`, then rename: a crash mid-write never leaves a half checkpoint behind."""
    final = out / CHECKPOINTS / f"step-{step:08d}"
    staging = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    (staging / RNG_FILE.format(rank=accelerator.process_index)).write_text(json.dumps(rng_state()))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (staging / STATE_FILE).write_text(json.dumps(state))
        write_manifest(staging, fingerprint, accelerator.num_processes)  # last: its presence means complete
        if final.exists():  # a damaged checkpoint the resume went past: keep it, under a name that says so
            aside = final.with_name(f"{final.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(final, aside)
            accelerator.print(f"kept the damaged {final.name} as {aside}")
        os.replace(staging, final)
        finished = finished_checkpoints(out)
        for old in finished[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator: Accelerator, folder: Path) -> None:
    """The bridge, optimizer and scheduler of `folder` (accelerate's files, checked against the manifest),
    then this rank's random generators, without which the run would not continue as it would have."""
    try:
        accelerator.load_state(str(folder))
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, TypeError) as e:
        raise NoCompleteCheckpoint(f"{folder}: its optimizer or scheduler state cannot be read ({type(e).__name__}: "
                                   f"{str(e)[:200]}); it is kept as it is. Resume from an earlier checkpoint (move "
                                   "this one away), or start a new run in another output_dir") from None
    path = folder / RNG_FILE.format(rank=accelerator.process_index)
    try:
        restore_rng_state(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError, IndexError, RuntimeError) as e:
        raise NoCompleteCheckpoint(f"{path}: the random generators' state cannot be restored ({type(e).__name__}: "
                                   f"{str(e)[:200]}), so the run would not continue as it would have. Resume from an "
                                   "earlier checkpoint (move this one away), or start a new run") from None


def rng_state() -> dict:
    python = random.getstate()
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {"python": [python[0], list(python[1]), python[2]],
            "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(gauss)],
            "torch": torch.get_rng_state().tolist(),
            "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []}


def restore_rng_state(state: dict) -> None:
    version, keys, gauss = state["python"]
    random.setstate((int(version), tuple(int(k) for k in keys), gauss if gauss is None else float(gauss)))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((str(kind), np.asarray(keys, dtype=np.uint32), int(position), int(has_gauss), float(cached)))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if torch.cuda.is_available():
        if len(state["cuda"]) != torch.cuda.device_count():
            raise ValueError(f"saved with {len(state['cuda'])} GPUs, resumed with {torch.cuda.device_count()}")
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def read_trainer_state(folder: Path) -> dict:
    path = folder / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise NoCompleteCheckpoint(f"{path}: cannot be read ({e})") from e


def checkpoint_bridge_only(accelerator: Accelerator) -> None:
    """accelerate saves and loads whole models; frozen backbones are rebuilt from their config instead.
    FSDP and DeepSpeed shard the model and checkpoint it their own way: there accelerate's full
    checkpoints are kept as they are (larger, with the frozen weights), and resume still works."""
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return

    def save_hook(models, weights, output_dir):
        for i, model in enumerate(models[: len(weights)]):
            weights[i] = bridge_state_dict(accelerator.unwrap_model(model))

    def load_hook(models, input_dir):
        for i, model in enumerate(models):
            path = Path(input_dir) / ("model.safetensors" if i == 0 else f"model_{i}.safetensors")
            load_bridge_state(accelerator.unwrap_model(model), read_bridge(path), str(path))
        models.clear()  # loaded above, strictly; accelerate must not load them again

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


__all__ = ["NoCompleteCheckpoint", "ResumeError", "checkpoint_bridge_only", "find_resumable", "holds_earlier_run",
           "load_checkpoint", "read_trainer_state", "recipe_fingerprint", "save_checkpoint"]
