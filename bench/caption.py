"""Greedy captioning, qformer against transformers' `Blip2ForConditionalGeneration`, same weights, one run.

`--shape paper`: ViT-g + Q-Former + OPT-2.7B (random weights, bf16), 30 new tokens, batch 1 and 16.
`--shape small`: a tiny model of the same layout, so the script runs on a CPU.
Both models come from one transformers checkpoint, imported with `qformer.bridge.convert`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from common import environment, time_ms
from transformers import Blip2Config, Blip2ForConditionalGeneration, ByT5Tokenizer

import qformer
from qformer.bridge.convert import convert_from_transformers

NEW_TOKENS = 30
IMAGE_TOKEN_ID = 384  # "<image>" added to the byte tokenizer (the tokenizer only names ids here)
SHAPES = {
    "paper": dict(vision={}, qformer={},  # transformers' defaults are BLIP-2's ViT-g and Q-Former
                  text={"model_type": "opt", "hidden_size": 2560, "num_hidden_layers": 32, "ffn_dim": 10240,
                        "num_attention_heads": 32, "vocab_size": 50272, "word_embed_proj_dim": 2560,
                        "max_position_embeddings": 2048}),
    "small": dict(vision={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                          "num_attention_heads": 2, "image_size": 224, "patch_size": 32},
                  qformer={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                           "intermediate_size": 128, "encoder_hidden_size": 64},
                  text={"model_type": "opt", "hidden_size": 64, "num_hidden_layers": 2, "ffn_dim": 128,
                        "num_attention_heads": 2, "vocab_size": 512, "word_embed_proj_dim": 64}),
}


def agreement_with(tokens: torch.Tensor, exact: torch.Tensor) -> str:
    """How often bf16 greedy decoding leaves the fp32 path: identical rows, and where the rest diverge."""
    differs = tokens != exact
    same = (~differs.any(dim=1)).float().mean().item()
    first = [int(row.nonzero()[0]) for row in differs if row.any()]
    where = f"; the others first differ at tokens {sorted(first)}" if first else ""
    return f"{same:.0%} of sequences identical{where}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=SHAPES, default=None, help="default: paper on a GPU, small on a CPU")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", default=None, help="where the checkpoints are written (default: a temp dir)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = SHAPES[args.shape or ("paper" if device.type == "cuda" else "small")]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    work = Path(args.workdir or tempfile.mkdtemp(prefix="qformer-bench-"))

    # one checkpoint, two libraries
    config = Blip2Config(vision_config=shape["vision"], qformer_config=shape["qformer"], text_config=shape["text"],
                         num_query_tokens=32, image_token_index=IMAGE_TOKEN_ID)
    torch.manual_seed(0)
    with torch.device(device):
        Blip2ForConditionalGeneration(config).to(dtype).save_pretrained(work / "hf")
    # loaded as users load it: from_pretrained keeps the Q-Former and queries in float32
    hf = Blip2ForConditionalGeneration.from_pretrained(work / "hf", dtype=dtype).to(device).eval()
    tokenizer = ByT5Tokenizer()
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    tokenizer.save_pretrained(work / "hf")
    convert_from_transformers(str(work / "hf"), work / "ours")
    name = {torch.bfloat16: "bfloat16", torch.float32: "float32"}[dtype]
    ours = qformer.Blip2.from_pretrained(work / "ours", **{"vision.dtype": name, "lm.dtype": name}).to(device).eval()

    reference_fp32 = None
    if dtype != torch.float32:  # qformer's own fp32 path, to count where bf16 rounding flips a token
        reference_fp32 = qformer.Blip2.from_pretrained(work / "ours").to(device).eval()
    rows, agreement = [], []
    for batch in args.batches:
        torch.manual_seed(batch)
        pixels = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
        ids = torch.full((batch, 32), IMAGE_TOKEN_ID, device=device)
        common = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1,
                      pad_token_id=0, eos_token_id=1)
        outputs = {}

        def run(key, fn):
            outputs[key] = fn()
            ms = time_ms(fn, device, warmup=2, repeats=args.repeats)
            rows.append({"name": f"{key}, batch {batch}", "ms": ms, "rate": batch * NEW_TOKENS / ms * 1e3,
                         "unit": "tokens/s"})

        with torch.no_grad():
            run("transformers", lambda: hf.generate(pixel_values=pixels, input_ids=ids, **common)[:, -NEW_TOKENS:])
            run("qformer", lambda: ours.generate(pixels.float(), ids, **common))
            # a static KV cache, decoded by transformers' loop (an option our loop does not take sends it there;
            # repetition_penalty=1.0 changes no logit) and by ours (`qformer.lm.decoding`); both use CUDA graphs on a
            # GPU
            static = dict(common, cache_implementation="static")
            run("transformers + static cache",
                lambda: hf.generate(pixel_values=pixels, input_ids=ids, **static)[:, -NEW_TOKENS:])
            run("qformer + static cache, transformers' loop",
                lambda: ours.generate(pixels.float(), ids, repetition_penalty=1.0, **static))
            run("qformer + static cache, our loop", lambda: ours.generate(pixels.float(), ids, **static))
        reference = outputs["transformers"]
        for key, tokens in outputs.items():
            same = (tokens == reference).all(dim=1).float().mean().item()
            agreement.append(f"batch {batch}, {key}: {same:.0%} of sequences token-identical to transformers")
        if reference_fp32 is not None:
            with torch.no_grad():
                exact = reference_fp32.generate(pixels.float(), ids, **common)
            for key in outputs:
                flips = agreement_with(outputs[key], exact)
                agreement.append(f"batch {batch}, {key} (bf16) vs qformer fp32: {flips}")
    print(environment(device))
    print(f"shape: {args.shape or ('paper' if device.type == 'cuda' else 'small')}, {dtype}, "
          f"{NEW_TOKENS} new tokens, greedy, median of {args.repeats} after 2 warm-up runs")
    ms = {r["name"]: r["ms"] for r in rows}
    pairs = [("dynamic cache (generate's default)", "transformers", "qformer"),
             ("static cache, transformers' loop on both", "transformers + static cache",
              "qformer + static cache, transformers' loop"),
             ("static cache: transformers' loop vs qformer's own", "transformers + static cache",
              "qformer + static cache, our loop")]
    for batch in args.batches:
        print(f"\nCaptioning, batch {batch}, like for like (both sides with the same cache)")
        print("| cache | transformers ms | qformer ms | qformer vs transformers |")
        print("|---|---:|---:|---:|")
        for label, theirs, mine in pairs:
            t, q = ms[f"{theirs}, batch {batch}"], ms[f"{mine}, batch {batch}"]
            print(f"| {label} | {t:.1f} | {q:.1f} | {t / q:.2f}x |")
    print("\n" + "\n".join(agreement))


if __name__ == "__main__":
    main()
