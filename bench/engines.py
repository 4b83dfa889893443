"""The wildlife pipeline on its two engines, torch and onnxruntime (no torch in the process), on real
camera-sized JPEGs read from disk: start-up to the first result, images/s and peak memory.

Each measurement is a fresh process (so its peak RSS is its own); the two engines alternate, pair by
pair, and the table shows medians. Both engines run the same code around the networks (detection,
crops, the decision policy) and stream the photos as `qformer wildlife` does: 8 at a time, decoded
in 2 threads while the previous 8 run.

    PYTHONPATH=.. python engines.py [--jpegs runs/wildlife-photos/wallpapers] [--pairs 3]    (from bench/)

The 1920x1080 set is the JPEGs under --jpegs (or the bundled photos), each cut to 16:9 and resized to
1920x1080; the 4000x3000 set is the same photos at 4000x3000, saved at JPEG quality 90.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STARTED = time.perf_counter()
ROOT = Path(__file__).resolve().parent.parent
SIZES = ((1920, 1080), (4000, 3000))
WITHOUT_TORCH = ("torch", "torchvision", "timm", "transformers", "accelerate")


def worker(engine: str, folder: str) -> None:
    """One engine in this process: prints its numbers as JSON."""
    if engine == "onnx":
        for name in WITHOUT_TORCH:
            sys.modules[name] = None  # importing torch now fails: the run proves it needs none
    from qformer.wildlife import WildlifePipeline

    files = sorted(str(f) for f in Path(folder).glob("*.jpg"))
    pipeline = WildlifePipeline.default(engine=engine)
    pipeline(files[:1])
    first = time.perf_counter() - STARTED
    begin = time.perf_counter()
    animals = sum(len(r.animals) for r in pipeline.stream(files, workers=2))
    seconds = time.perf_counter() - begin
    print(json.dumps({"first_s": first, "images_per_s": len(files) / seconds, "animals": animals,
                      "peak_mib": peak_rss_mib(),
                      "torch_loaded": sys.modules.get("torch") is not None}))


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: Linux carries that over
    from the parent through fork and exec, so a light child of a heavy parent would report the parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (this benchmark reads Linux's memory accounting)")


def jpeg_sets(source: str | None, work: Path) -> dict[tuple[int, int], Path]:
    from PIL import Image, ImageOps

    found = sorted(Path(source).rglob("*.jpg")) if source else sorted((ROOT / "samples").glob("*.jpg"))
    sets = {}
    for size in SIZES:
        folder = work / f"{size[0]}x{size[1]}"
        folder.mkdir()
        for k, path in enumerate(found):
            with Image.open(path) as image:
                ImageOps.fit(image.convert("RGB"), size, Image.Resampling.BICUBIC).save(
                    folder / f"{k:03d}.jpg", quality=90)
        sets[size] = folder
    return sets


def measure(engine: str, folder: Path) -> dict:
    run = subprocess.run([sys.executable, __file__, "--worker", engine, str(folder)], capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"the {engine} worker failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jpegs", help="a folder of JPEG photos (default: the bundled samples)")
    parser.add_argument("--pairs", type=int, default=3, help="torch/onnx pairs per size")
    parser.add_argument("--worker", nargs=2, metavar=("ENGINE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    import platform

    import onnxruntime
    import torch

    import qformer

    rows = []
    with tempfile.TemporaryDirectory() as work:
        for size, folder in jpeg_sets(args.jpegs, Path(work)).items():
            runs: dict[str, list[dict]] = {"torch": [], "onnx": []}
            for _ in range(args.pairs):
                for engine in runs:
                    runs[engine].append(measure(engine, folder))
            count = len(list(folder.glob("*.jpg")))
            for engine, measured in runs.items():
                assert not any(m["torch_loaded"] for m in measured) or engine == "torch"
                median = {k: statistics.median(m[k] for m in measured) for k in ("first_s", "images_per_s",
                                                                                   "peak_mib")}
                rows.append((f"{size[0]}x{size[1]}", engine, count, median, measured[0]["animals"]))
    print(f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads | torch "
          f"{torch.__version__} | onnxruntime {onnxruntime.__version__} | qformer {qformer.__version__}")
    print(f"median of {args.pairs} fresh processes per engine, alternating\n")
    print("| JPEGs | engine | photos | start to first result, s | images/s | peak RSS, MiB | animals |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for size, engine, count, median, animals in rows:
        name = "torch" if engine == "torch" else "onnxruntime (no torch)"
        print(f"| {size} | {name} | {count} | {median['first_s']:.2f} | {median['images_per_s']:.2f} | "
              f"{median['peak_mib']:.0f} | {animals} |")


if __name__ == "__main__":
    main()
