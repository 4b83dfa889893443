"""Wildlife pipeline throughput on this machine, every variant on the same images in one run:

- the default: NanoDet-m fused with activation-map regions, crops and the whole photo, coarse groups
  from Lite0 (Lite2 when unsure), and the group's Lite2 expert; one image at a time and in batches;
- the realistic alternative: the same detector, but one Lite2 pass per crop answering both the
  group and the species (no cheap coarse model);
- activation maps alone as the detector (the pipeline before NanoDet);
- on JPEG files: the default streamed (the next batch decoding while this one runs, as `qformer
  wildlife` does), called batch by batch, and streamed without its overview (each network that
  sees the whole photo reducing the decoded photo itself); alternated.

(The default experts share one Lite2, which runs once per crop whichever experts ask, so asking every
expert costs what asking one does; separate expert models would each cost a pass.)

All variants batch the same way, use channels-last classifiers, and run on the same threads.

    PYTHONPATH=.. python wildlife.py [--photos DIR] [--jpegs DIR] [--engine torch|onnx]   (from bench/)

`--jpegs DIR` adds the three rows on the JPEG files under DIR, read and decoded by the pipeline
(camera traps and phones write 1920x1080 or larger JPEGs).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import environment
from PIL import Image

from qformer.processing.images import find_images, load_image
from qformer.wildlife import WildlifePipeline

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def images(photos: str | None) -> list[Image.Image]:
    found = [load_image(str(p)) for p in sorted(SAMPLES.glob("*.jpg"))]
    if photos:
        files, _ = find_images([photos])
        found += [load_image(f) for f in files]
    cat = load_image(str(SAMPLES / "chelsea.jpg"))
    pair = Image.new("RGB", (cat.width * 5 // 2, cat.height), (120, 140, 110))
    pair.paste(cat, (0, 0))
    pair.paste(cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (cat.width * 3 // 2, 0))
    return found + [pair, cat.rotate(8), cat.resize((cat.width // 2, cat.height // 2))]


def run(pipeline: WildlifePipeline, photos: list, batch: int) -> tuple[float, int]:
    begin = time.perf_counter()
    detections = 0
    for start in range(0, len(photos), batch):
        detections += sum(len(r.animals) for r in pipeline(photos[start : start + batch]))
    return time.perf_counter() - begin, detections


def alternated(jobs: dict[str, tuple], repeats: int) -> list[tuple[str, float, int, int]]:
    """(name, median seconds, images, detections) per job `(how, pipeline, images, batch)`; the jobs take
    turns, so a slow spell of the machine hits each of them."""
    timed: dict[str, list[tuple[float, int]]] = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, (how, pipeline, images, batch) in jobs.items():
            timed[name].append(how(pipeline, images, batch))
    return [(name, statistics.median(s for s, _ in times), len(jobs[name][2]), times[0][1])
            for name, times in timed.items()]


def stream(pipeline: WildlifePipeline, files: list, batch: int) -> tuple[float, int]:
    begin = time.perf_counter()
    detections = sum(len(r.animals) for r in pipeline.stream(files, workers=2))
    return time.perf_counter() - begin, detections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--photos", help="a folder of more photos to time (e.g. runs/wildlife-photos)")
    parser.add_argument("--jpegs",
                        help="a folder of JPEG files to time from disk (e.g. runs/wildlife-photos/wallpapers)")
    parser.add_argument("--engine", choices=("torch", "onnx"), default="torch")
    args = parser.parse_args()
    photos = images(args.photos)
    base = WildlifePipeline.default(engine=args.engine)

    def variant(detector=None, coarse=None, strong=True, batch=args.batch, overview_side=base.overview_side):
        return WildlifePipeline(detector or base.detector, coarse or base.coarse, base.experts, base.knowledge,
                                strong_coarse=base.strong_coarse if strong else None,
                                batch_size=batch, overview_side=overview_side), batch

    variants = {
        "default: NanoDet + activation maps, one at a time": variant(batch=1),
        f"default: NanoDet + activation maps, batches of {args.batch}": variant(),
        "one Lite2 pass per crop for group and species": variant(coarse=base.strong_coarse, strong=False),
        "activation maps only (no NanoDet)": variant(detector=base.detector.regions),
    }
    for pipeline, batch in variants.values():
        run(pipeline, photos[:2], batch)  # warm-up
    rows = alternated({name: (run, pipeline, photos, batch) for name, (pipeline, batch) in variants.items()},
                      args.repeats)
    if args.jpegs:
        files = sorted(str(f) for f in Path(args.jpegs).rglob("*.jpg"))
        width, height = sorted(Image.open(f).size for f in files)[len(files) // 2]
        about = f"{len(files)} JPEG files of about {width}x{height} read from disk"
        default = variants[f"default: NanoDet + activation maps, batches of {args.batch}"][0]
        rows += alternated({f"default, {about}, streamed": (stream, default, files, args.batch),
                            "... called batch by batch": (run, default, files, args.batch),
                            "... streamed, without the overview":
                                (stream, variant(overview_side=None)[0], files, args.batch)}, args.repeats)
    print(environment(torch.device("cpu")), f"| engine: {args.engine}")
    print(f"{len(photos)} images (the bundled photos{', ' + args.photos if args.photos else ''}, and the cat "
          f"twice side by side, rotated and halved); median of {args.repeats} runs, the variants alternating\n")
    print("| variant | s | images/s | detections | vs default in batches |")
    print("|---|---:|---:|---:|---:|")
    default_rate = rows[1][2] / rows[1][1]
    for name, seconds, count, detections in rows:
        print(f"| {name} | {seconds:.2f} | {count / seconds:.2f} | {detections} | "
              f"{count / seconds / default_rate:.2f}x |")


if __name__ == "__main__":
    main()
