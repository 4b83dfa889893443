"""The routed default's `qformer caption` in an environment without torch, beside the same command
with torch, on this machine: process start to caption, peak memory and warm latency, for a photo
(the grounded path) and a drawing (the trained bridge on onnxruntime, built once into the cache).

Each start is a fresh process; the environments and inputs alternate run by run and the table shows
medians. The first drawing builds the bridge into an empty cache (`QFORMER_CACHE`), once.

    PYTHONPATH=.. python torch_free.py --torch-free-python /path/to/venv/bin/python [--runs 7]   (from bench/)

The torch-free environment is the README's two install lines in a fresh virtual environment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INPUTS = {"a photo": ROOT / "samples" / "chelsea.jpg", "a drawing": ROOT / "samples" / "scene.png"}
# the CLI in a child that reports its own peak memory; a warm run captions the image again in process
CHILD = r"""
import json, statistics, sys, time
from pathlib import Path
warm = sys.argv.pop(1) == "warm"
from qformer.cli.main import main
code = main(["caption", sys.argv[1]])
seconds = []
if warm:
    from qformer.grounded import load_captioner
    captioner = load_captioner("default")
    captioner.caption([sys.argv[1]])
    for _ in range(7):
        begin = time.perf_counter()
        captioner.caption([sys.argv[1]])
        seconds.append(time.perf_counter() - begin)
peak = next(int(line.split()[1]) / 1024 for line in Path("/proc/self/status").read_text().splitlines()
            if line.startswith("VmHWM:"))
print(json.dumps({"code": code, "peak_mib": peak, "warm_ms": statistics.median(seconds) * 1000 if warm else None}))
"""


def run(python: str, image: Path, warm: bool = False, env: dict | None = None) -> dict:
    begin = time.perf_counter()
    done = subprocess.run([python, "-c", CHILD, "warm" if warm else "cold", str(image)], capture_output=True,
                          text=True, env=env)
    seconds = time.perf_counter() - begin
    if done.returncode:
        raise SystemExit(f"{python} failed on {image}:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.splitlines()[-1])
    caption = next((line for line in done.stdout.splitlines() if line.startswith(str(image))), "")
    return {**result, "seconds": seconds, "caption": caption.split(": ", 1)[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-free-python", required=True, help="python of an environment without torch")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    check = subprocess.run([args.torch_free_python, "-c", "import torch"], capture_output=True)
    if check.returncode == 0:
        raise SystemExit(f"{args.torch_free_python} imports torch: give the python of an environment without it")
    pythons = {"without torch": args.torch_free_python, "with torch": sys.executable}
    for python in pythons.values():  # caches built, files in the page cache
        for image in INPUTS.values():
            run(python, image)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        first = run(args.torch_free_python, INPUTS["a drawing"], env={**os.environ, "QFORMER_CACHE": cache})
    runs: dict[tuple[str, str], list[dict]] = {(e, i): [] for e in pythons for i in INPUTS}
    for _ in range(args.runs):
        for what, image in INPUTS.items():
            for environment, python in pythons.items():
                runs[environment, what].append(run(python, image))
    for (environment, what), measured in runs.items():
        warm = run(pythons[environment], INPUTS[what], warm=True)
        rows.append((what, environment, statistics.median(m["seconds"] for m in measured),
                     statistics.median(m["peak_mib"] for m in measured), warm["warm_ms"], measured[0]["caption"]))
    rows.append(("a drawing, the first time (builds the bridge)", "without torch", first["seconds"],
                 first["peak_mib"], None, first["caption"]))
    import platform

    import onnxruntime

    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores | onnxruntime "
          f"{onnxruntime.__version__} | median of {args.runs} fresh processes, alternating\n")
    print("| `qformer caption` of | environment | start to caption, s | peak RSS, MiB | warm, ms | caption |")
    print("|---|---|---:|---:|---:|---|")
    for what, environment, seconds, peak, warm_ms, caption in rows:
        warm_text = f"{warm_ms:.0f}" if warm_ms is not None else "–"
        print(f"| {what} | {environment} | {seconds:.2f} | {peak:.0f} | {warm_text} | {caption} |")


if __name__ == "__main__":
    main()
