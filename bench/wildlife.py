"""Wildlife pipeline throughput on this machine, the same images in one run:

- one image at a time against batches (the detector, coarse and expert nodes batch their inputs);
- the cascade (coarse group -> that group's expert) against running every expert on every detection.

The default experts share one EfficientNet-Lite2, so "every expert" means one Lite2 pass per group per
detection: what separate expert models would cost.

    PYTHONPATH=.. python wildlife.py            (from bench/)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image

from common import environment
from qformer.images import load_image
from qformer.wildlife import WildlifePipeline

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def images() -> list[Image.Image]:
    photos = [load_image(str(p)) for p in sorted(SAMPLES.glob("*.jpg"))]
    cat = load_image(str(SAMPLES / "chelsea.jpg"))
    pair = Image.new("RGB", (cat.width * 5 // 2, cat.height), (120, 140, 110))
    pair.paste(cat, (0, 0))
    pair.paste(cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (cat.width * 3 // 2, 0))
    return photos + [pair, cat.rotate(8), cat.resize((cat.width // 2, cat.height // 2)), pair.resize((400, 160))]


def run(pipeline: WildlifePipeline, photos: list[Image.Image], batch: int) -> tuple[float, int]:
    begin = time.perf_counter()
    detections = 0
    for start in range(0, len(photos), batch):
        detections += sum(len(r.animals) for r in pipeline(photos[start : start + batch]))
    return time.perf_counter() - begin, detections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    photos = images()
    variants = [("cascade, one at a time", True, 1), (f"cascade, batches of {args.batch}", True, args.batch),
                ("every expert, one at a time", False, 1), (f"every expert, batches of {args.batch}", False, args.batch)]
    base = WildlifePipeline.default()
    rows = []
    for name, cascade, batch in variants:
        pipeline = WildlifePipeline(base.detector, base.coarse, base.experts, base.knowledge,
                                    strong_coarse=base.strong_coarse, cascade=cascade, batch_size=batch)
        run(pipeline, photos[:2], batch)  # warm-up
        seconds, detections = min(run(pipeline, photos, batch) for _ in range(args.repeats))
        rows.append((name, seconds, detections))
    print(environment(torch.device("cpu")))
    print(f"{len(photos)} images (the bundled photos, and the cat pasted twice side by side, rotated and halved), best of {args.repeats}\n")
    print("| variant | s | images/s | detections | vs cascade, one at a time |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds, detections in rows:
        print(f"| {name} | {seconds:.2f} | {len(photos) / seconds:.2f} | {detections} | {rows[0][1] / seconds:.2f}x |")


if __name__ == "__main__":
    main()
