"""Start-up and caption latency of a preset on this machine: process start to first caption (after
the one-time GGUF cache), warm caption latency per image, and peak resident memory; for the
default, also the routed captioner (photos grounded, drawings to the bridge).

Each measurement runs in a fresh Python process, as a user's first command would.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, statistics, sys, time
start = time.perf_counter()
import torch
import qformer
if sys.argv[3] == "routed":  # the routed captioner: photos grounded, drawings to the bridge
    from qformer.grounded import load_captioner
    model = load_captioner(sys.argv[1])
else:
    model = qformer.create_model(sys.argv[1], lm={"dtype": sys.argv[3]}).eval()
loaded = time.perf_counter()
images = sys.argv[4:]
model.caption(images[:1], max_new_tokens=int(sys.argv[2]))
first = time.perf_counter()
warm = []
for image in images * 3:  # three rounds, so the median is stable
    begin = time.perf_counter()
    model.caption([image], max_new_tokens=int(sys.argv[2]))
    warm.append(time.perf_counter() - begin)
print(json.dumps({"import_and_load_s": loaded - start, "first_caption_s": first - start,
                  "warm_caption_s": statistics.median(warm),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="default")
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("images", nargs="*", default=sorted(str(p) for p in Path("samples").glob("*.*g")))
    args = parser.parse_args()
    # the first run may fill the GGUF cache; the later ones are the cold starts users see
    photos = [i for i in args.images if Path(i).suffix.lower() in (".jpg", ".jpeg")]
    drawings = [i for i in args.images if i not in photos]
    plan = [("first run (may fill the cache)", "float32", args.images), ("cold start, fp32 LM", "float32", args.images),
            ("cold start, bf16 LM", "bfloat16", args.images)]
    if args.model == "default":  # the routed default on photos (grounded) and on drawings (the bridge)
        plan += [(f"routed default, {len(photos)} photos", "routed", photos),
                 (f"routed default, {len(drawings)} drawings", "routed", drawings)]
    runs = []
    for _, dtype, images in plan:
        out = subprocess.run([sys.executable, "-c", CHILD, args.model, str(args.tokens), dtype, *images],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    import torch

    print(f"model: {args.model} | {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads | "
          f"torch {torch.__version__} | up to {args.tokens} new tokens | images: {', '.join(Path(i).name for i in args.images)}")
    print("| run | process start to first caption (s) | of which import + load (s) | warm caption per image, median (s) | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for (name, _, _), r in zip(plan, runs):
        print(f"| {name} | {r['first_caption_s']:.2f} | {r['import_and_load_s']:.2f} | {r['warm_caption_s']:.3f} | "
              f"{r['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
