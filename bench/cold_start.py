"""Start-up and caption latency of a preset on this machine: process start to first caption (after
the one-time GGUF and engine caches), warm caption latency per image, decoding speed and peak
resident memory, for the LM in torch (fp32, bf16), on onnxruntime (int8, int4 weights), and for
`qformer export --onnx` folders (visual path and LM on onnxruntime, fp32 and int4, and the int4
folder on the torch-free runtime); for the default, also the routed captioner (photos grounded,
drawings to the bridge).

Each measurement runs in a fresh Python process, as a user's first command would.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, statistics, sys, time
start = time.perf_counter()
import qformer
how = sys.argv[3]
bridge = "bridge" if sys.argv[1] in ("default", "grounded") else sys.argv[1]  # the rows below time a bridge
if how.startswith("lite="):  # an exported folder on the torch-free runtime
    from qformer.deploy.lite import LiteCaptioner
    model = LiteCaptioner(how[len("lite="):])
elif how == "routed":  # the routed captioner: photos grounded, drawings to the bridge
    from qformer.grounded import load_captioner
    model = load_captioner(sys.argv[1])
elif how.startswith("folder="):  # an exported folder
    model = qformer.create_model(how[len("folder="):])
elif how in ("int8", "int4"):
    model = qformer.create_model(bridge, lm={"quantize": how})
else:
    model = qformer.create_model(bridge, lm={"dtype": how}).eval()
loaded = time.perf_counter()
images = sys.argv[4:]
model.caption(images[:1], max_new_tokens=int(sys.argv[2]))
first = time.perf_counter()
warm = []
for image in images * 3:  # three rounds, so the median is stable
    begin = time.perf_counter()
    model.caption([image], max_new_tokens=int(sys.argv[2]))
    warm.append(time.perf_counter() - begin)
tokens_per_s = None
if how != "routed":  # decoding alone: 17 forced tokens more than a one-token caption, same image
    def timed(n):
        begin = time.perf_counter()
        model.caption(images[:1], max_new_tokens=n, min_new_tokens=n)
        return time.perf_counter() - begin
    one, many = min(timed(1) for _ in range(3)), min(timed(18) for _ in range(3))
    tokens_per_s = 17 / (many - one)
print(json.dumps({"import_and_load_s": loaded - start, "first_caption_s": first - start,
                  "warm_caption_s": statistics.median(warm), "tokens_per_s": tokens_per_s,
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
    exported = Path(tempfile.mkdtemp(prefix="qformer-bench-"))
    for name, extra in (("fp32", []), ("int4", ["--quantize", "int4"])):
        subprocess.run([sys.executable, "-m", "qformer", "export", "--onnx", str(exported / name), "--model",
                        args.model, *extra], check=True, capture_output=True)
    plan = [("first run (may fill the cache)", "float32", args.images), ("cold start, fp32 LM", "float32", args.images),
            ("cold start, bf16 LM", "bfloat16", args.images)]
    for bits in ("int8", "int4"):  # the first run builds the engine; the second is the cold start users see
        plan += [(f"first run, {bits} LM on onnxruntime (may build the engine cache)", bits, args.images),
                 (f"cold start, {bits} LM on onnxruntime", bits, args.images)]
    plan += [("exported folder: visual graph + fp32 LM on onnxruntime", f"folder={exported / 'fp32'}", args.images),
             ("exported folder: visual graph + int4 LM on onnxruntime", f"folder={exported / 'int4'}", args.images),
             ("exported folder, int4, without torch (`qformer.deploy.lite`)", f"lite={exported / 'int4'}", args.images)]
    if args.model == "default":  # the routed default on photos (grounded) and on drawings (the bridge)
        plan += [(f"routed default, {len(photos)} photos", "routed", photos),
                 (f"routed default, {len(drawings)} drawings", "routed", drawings)]
    runs = []
    for _, dtype, images in plan:
        out = subprocess.run([sys.executable, "-c", CHILD, args.model, str(args.tokens), dtype, *images],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    import onnxruntime
    import torch

    print(f"model: {args.model} | {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads | "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__} | up to {args.tokens} new tokens | "
          f"images: {', '.join(Path(i).name for i in args.images)}")
    shutil.rmtree(exported)
    print("| run | process start to first caption (s) | of which import + load (s) | warm "
          "caption per image, median (s) "
          "| decoding, tokens/s | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for (name, _, _), r in zip(plan, runs):
        speed = f"{r['tokens_per_s']:.0f}" if r["tokens_per_s"] else "–"
        print(f"| {name} | {r['first_caption_s']:.2f} | {r['import_and_load_s']:.2f} | {r['warm_caption_s']:.3f} | "
              f"{speed} | {r['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
