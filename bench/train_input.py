"""Training throughput (images/s) with the input pipeline in the main process against DataLoader
workers, the same recipe, data and steps in one run: stage 1 of the shipped default's architecture
(EfficientNet-Lite0 at 224 px), batch 16, on JPEG photos the size a phone takes (1600x1200).

Only the place where images are decoded and preprocessed differs between the rows (`data.num_workers`);
the steps compute the same thing (the weights come out bit-identical, tests/test_training.py).

    PYTHONPATH=.. python train_input.py [--steps 12] [--workers 0 1 2]     (from bench/)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import environment
from PIL import Image
from skimage import data

from qformer.training.loop import train
from qformer.training.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent


def photo_folder(folder: Path, count: int) -> Path:
    """`count` 1600x1200 JPEGs cut from scikit-image's bundled photos, with captions."""
    sources = [data.chelsea(), data.astronaut(), data.coffee(), data.rocket(), data.hubble_deep_field()]
    rng = np.random.default_rng(0)
    rows = []
    for k in range(count):
        image = Image.fromarray(sources[k % len(sources)]).convert("RGB")
        w, h = image.size
        left, top = int(rng.integers(0, w // 4)), int(rng.integers(0, h // 4))
        image.crop((left, top, w - int(rng.integers(0, w // 4)), h)).resize((1600, 1200)).save(
            folder / f"{k:04d}.jpg", quality=90)
        rows.append({"file_name": f"{k:04d}.jpg", "text": f"photo {k % len(sources)}"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def images_per_second(folder: Path, out: Path, workers: int, steps: int, batch: int) -> float:
    recipe = load_recipe(ROOT / "configs" / "train" / "tiny-stage1.yaml", [
        "model=lite0-smollm2", f"data.train={folder}", f"data.batch_size={batch}", f"data.num_workers={workers}",
        f"max_steps={steps}", "save_every=0", "log_every=1", "data.eval_size=2", f"output_dir={out}",
        "optim.warmup_steps=1",
    ])
    train(recipe)
    state = json.loads(sorted((out / "checkpoints").glob("step-*"))[-1].joinpath("trainer_state.json").read_text())
    rates = [h["images_per_s"] for h in state["history"]][2:]  # the first steps start the workers and warm up
    return float(np.median(rates))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = photo_folder(Path(tmp) / "photos", 64) if (Path(tmp) / "photos").mkdir() is None else None
        rows = []
        for workers in args.workers:
            started = time.perf_counter()
            rate = images_per_second(folder, Path(tmp) / f"run-{workers}", workers, args.steps, args.batch)
            rows.append((workers, rate, time.perf_counter() - started))
    print(f"\nTraining input pipeline, stage 1, batch {args.batch}, 1600x1200 JPEGs | "
          f"{environment(torch.device('cpu'))}")
    print("| data.num_workers | images/s (median step) | vs 0 workers | run, s |")
    print("|---:|---:|---:|---:|")
    base = rows[0][1]
    for workers, rate, seconds in rows:
        print(f"| {workers} | {rate:.1f} | {rate / base:.2f}x | {seconds:.0f} |")


if __name__ == "__main__":
    main()
