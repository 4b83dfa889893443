"""Q-Former training step, qformer against transformers' `Blip2QFormerModel`, same weights, one run.

The step BLIP-2 repeats most: forward the queries over frozen image tokens, backward, AdamW.
`--shape paper`: 12 layers, width 768, 32 queries, ViT-g tokens 257 x 1408, batch 64 (GPU).
`--shape small`: a CPU-sized model, so the script runs anywhere.
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from common import environment, time_ms
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from qformer.bridge.convert import key_pairs
from qformer.bridge.qformer import QFormer
from qformer.config import QFormerConfig

SHAPES = {
    "paper": dict(hidden=768, layers=12, heads=12, ffn=3072, queries=32, tokens=257, width=1408, batch=64),
    "small": dict(hidden=128, layers=4, heads=4, ffn=512, queries=8, tokens=50, width=192, batch=8),
}


def build(shape: dict, device: torch.device, attention: str):
    hf_config = Blip2QFormerConfig(hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
                                   num_attention_heads=shape["heads"], intermediate_size=shape["ffn"],
                                   encoder_hidden_size=shape["width"], cross_attention_frequency=2,
                                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hf_config._attn_implementation = attention
    torch.manual_seed(0)
    hf = Blip2QFormerModel(hf_config).to(device)
    hf_queries = torch.nn.Parameter(torch.randn(1, shape["queries"], shape["hidden"], device=device) * 0.02)
    ours = QFormer(QFormerConfig(num_queries=shape["queries"], hidden_size=shape["hidden"], num_layers=shape["layers"],
                                 num_heads=shape["heads"], intermediate_size=shape["ffn"], cross_attention_freq=2,
                                 encoder_width=shape["width"], dropout=0.0)).to(device)
    # the same weights in both, through the parity issue's key map
    source = {"qformer." + k: v for k, v in hf.state_dict().items()} | {"query_tokens": hf_queries.detach()}
    targets = ours.state_dict()
    with torch.no_grad():
        for our_key, their_keys in key_pairs(ours.config, with_text_ffn=False).items():
            if our_key.startswith("qformer."):
                targets[our_key[len("qformer."):]].copy_(torch.cat([source[k] for k in their_keys]))
    return hf, hf_queries, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=SHAPES, default=None, help="default: paper on a GPU, small on a CPU")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = SHAPES[args.shape or ("paper" if device.type == "cuda" else "small")]
    dtype = torch.bfloat16
    torch.manual_seed(1)
    image_tokens = torch.randn(shape["batch"], shape["tokens"], shape["width"], device=device, dtype=dtype)
    target = torch.randn(shape["batch"], shape["queries"], shape["hidden"], device=device)

    hf, hf_queries, ours = build(shape, device, "sdpa")
    hf_eager, hf_eager_queries, _ = build(shape, device, "eager")

    def hf_forward(model, queries):
        return model(query_embeds=queries.expand(shape["batch"], -1, -1),
                     encoder_hidden_states=image_tokens).last_hidden_state

    # numerics first: fp32 outputs of the two implementations on the same weights
    with torch.no_grad():
        reference = hf_forward(hf, hf_queries).float()
        mine = ours(image_tokens.float())
        print(f"fp32 parity: max |qformer - transformers| = {(mine - reference).abs().max().item():.2e}")

    def step_fn(forward, params, fused: bool):
        optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, fused=fused and device.type == "cuda")
        losses = []

        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype):
                out = forward()
            loss = torch.nn.functional.mse_loss(out.float(), target)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        return step, losses

    # every optimisation level on both implementations: the ratio that matters is within a level
    cuda = device.type == "cuda"
    levels = [("plain", False, None), ("fused AdamW", True, None)] if cuda else [("plain", False, None)]
    if not args.no_compile:
        levels.append(("fused AdamW + compile" if cuda else "compile", cuda, "default"))
        if cuda:  # CUDA graphs: one launch for the many small kernels of 32 queries
            levels.append(("fused AdamW + compile, CUDA graphs", True, "reduce-overhead"))
    implementations = {
        "transformers": (lambda: hf_forward(hf, hf_queries), hf, [*hf.parameters(), hf_queries]),
        "qformer": (lambda: ours(image_tokens), ours, list(ours.parameters())),
    }
    reference_loss = torch.nn.functional.mse_loss(ours(image_tokens.float()).detach(), target).item()  # fp32
    eager_ms = time_ms(step_fn(lambda: hf_forward(hf_eager, hf_eager_queries),
                               [*hf_eager.parameters(), hf_eager_queries], False)[0], device, 3, args.repeats)
    results = []
    for level, fused, mode in levels:
        timed = {}
        for name, (forward, module, params) in implementations.items():
            snapshot = {k: v.clone() for k, v in module.state_dict().items()}
            run = forward
            if mode is not None:
                compiled = torch.compile(module, mode=mode)
                run = (lambda c=compiled: hf_forward(c, hf_queries)) if name == "transformers" else (
                    lambda c=compiled: c(image_tokens))
            step, losses = step_fn(run, params, fused)
            timed[name] = (time_ms(step, device, warmup=3, repeats=args.repeats), losses[0].item())
            with torch.no_grad():  # every variant starts from the same weights
                for k, v in module.state_dict().items():
                    v.copy_(snapshot[k])
        results.append((level, timed))
    print(environment(device))
    print(f"shape: {shape}, bf16 autocast, median of {args.repeats} steps after 3 warm-up steps; "
          f"fp32 reference loss {reference_loss:.5f}; transformers with eager attention, plain: {eager_ms:.1f} ms")
    print("\nQ-Former training step (forward + backward + AdamW), like for like")
    print("| optimisations (both sides) | transformers ms | qformer ms | qformer images/s | qformer vs transformers |")
    print("|---|---:|---:|---:|---:|")
    for level, timed in results:
        (theirs, _), (mine, _) = timed["transformers"], timed["qformer"]
        print(f"| {level} | {theirs:.1f} | {mine:.1f} | {shape['batch'] / mine * 1e3:.0f} | {theirs / mine:.2f}x |")
    spread = max(abs(loss - reference_loss) / reference_loss for _, t in results for _, loss in t.values())
    print(f"first losses within {spread:.2%} of the fp32 loss")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
