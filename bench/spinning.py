"""Why the detector's and the classifiers' onnxruntime sessions do not spin: with spinning on, a
session's idle threads keep polling for work after its run, on the cores the next graph (another
network, on the same photo) needs. One run, spinning on against off, pair by pair in fresh
processes, without torch; medians:

    PYTHONPATH=.. python spinning.py [--jpegs FOLDER] [--pairs 3]      (from bench/)

Rows: the default's warm photo caption (samples/chelsea.jpg and samples/coffee.jpg, median of 21
each) and, in processes of their own, the wildlife pipeline's images/s on the JPEGs under --jpegs
(or the bundled photos), cut to 1920x1080, decoded in 2 threads, in batches of 8 (the better of two
passes).
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

from engines import WITHOUT_TORCH, jpeg_sets

PHOTOS = ("samples/chelsea.jpg", "samples/coffee.jpg")


def worker(spinning: bool, job: str, folder: str) -> None:
    """One job ("caption" or "wildlife") in this process, its sessions spinning or not."""
    for name in WITHOUT_TORCH:
        sys.modules[name] = None
    import qformer.deploy.runtime as runtime

    open_session = runtime.open_session

    def forced(graph, threads=None, remedy="export the model again", spin=True, arena=True):
        return open_session(graph, threads, remedy, spin=spinning, arena=arena)

    runtime.open_session = forced  # before the modules that open sessions import it
    if job == "caption":
        from qformer.grounded import load_captioner

        captioner, timings = load_captioner("default"), []
        for photo in PHOTOS:
            captioner.caption([photo])
            for _ in range(21):
                begin = time.perf_counter()
                captioner.caption([photo])
                timings.append(time.perf_counter() - begin)
        return print(json.dumps({"caption_ms": 1000 * statistics.median(timings)}))
    from qformer.wildlife import WildlifePipeline

    files = sorted(str(f) for f in Path(folder).glob("*.jpg"))
    pipeline = WildlifePipeline.default(engine="onnx")
    pipeline(files[:2])
    best = float("inf")
    for _ in range(2):
        begin = time.perf_counter()
        for start in range(0, len(files), 8):
            pipeline(files[start : start + 8], workers=2)
        best = min(best, time.perf_counter() - begin)
    print(json.dumps({"images_per_s": len(files) / best}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jpegs", help="a folder of JPEG photos (default: the bundled samples)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--worker", nargs=3, metavar=("SPIN", "JOB", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker[0] == "on", args.worker[1], args.worker[2])
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as work:
        folder = jpeg_sets(args.jpegs, Path(work))[(1920, 1080)]
        runs: dict[str, dict] = {"on": {}, "off": {}}
        for _ in range(args.pairs):
            for job in ("caption", "wildlife"):
                for spin in runs:
                    run = subprocess.run([sys.executable, __file__, "--worker", spin, job, str(folder)],
                                         capture_output=True, text=True, cwd=root)
                    if run.returncode:
                        raise SystemExit(f"the worker failed:\n{run.stderr[-3000:]}")
                    for key, value in json.loads(run.stdout.splitlines()[-1]).items():
                        runs[spin].setdefault(key, []).append(value)
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}, {args.pairs} pairs, medians")
    print("| sessions | warm photo caption (ms) | wildlife, 1920x1080 JPEGs (images/s) |\n|---|---:|---:|")
    for spin, found in runs.items():
        print(f"| spinning {spin} | {statistics.median(found['caption_ms']):.1f} | "
              f"{statistics.median(found['images_per_s']):.2f} |")


if __name__ == "__main__":
    main()
