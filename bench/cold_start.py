"""Start-up and caption latency of a preset on this machine: process start to first caption (after
the one-time GGUF cache), warm caption latency per image, and peak resident memory.

Each measurement runs in a fresh Python process, as a user's first command would.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, statistics, sys, time
start = time.perf_counter()
import torch
import qformer
model = qformer.create_model(sys.argv[1]).eval()
loaded = time.perf_counter()
images = sys.argv[3:]
model.caption(images[:1], max_new_tokens=int(sys.argv[2]))
first = time.perf_counter()
warm = []
for image in images:
    begin = time.perf_counter()
    model.caption([image], max_new_tokens=int(sys.argv[2]))
    warm.append(time.perf_counter() - begin)
print(json.dumps({"import_and_load_s": loaded - start, "first_caption_s": first - start,
                  "warm_caption_s": statistics.median(warm)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="lite0-smollm2")
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("images", nargs="*", default=sorted(str(p) for p in Path("samples").glob("*.jpg")))
    args = parser.parse_args()
    runs = []
    for attempt in range(2):  # the first may fill the GGUF cache; the second is the cold start users see
        begin = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, args.model, str(args.tokens), *args.images],
                             capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1]) | {"wall_s": time.perf_counter() - begin}
        runs.append(result)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    import torch

    print(f"model: {args.model} | {torch.get_num_threads()} threads | {args.tokens} new tokens | images: {len(args.images)}")
    print("| run | process start to first caption (s) | of which import + load (s) | warm caption per image (s) |")
    print("|---|---:|---:|---:|")
    for name, r in zip(("first (may fill the cache)", "cold start, cache filled"), runs):
        print(f"| {name} | {r['first_caption_s']:.2f} | {r['import_and_load_s']:.2f} | {r['warm_caption_s']:.3f} |")
    print(f"peak resident memory of a run: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
