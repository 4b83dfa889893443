"""Q-Former training step, qformer against transformers' `Blip2QFormerModel`, same weights, one run.

The step BLIP-2 repeats most: forward the queries over frozen image tokens, backward, AdamW.
`--shape paper`: 12 layers, width 768, 32 queries, ViT-g tokens 257 x 1408, batch 64 (GPU).
`--shape small`: a CPU-sized model, so the script runs anywhere.
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from qformer.config import QFormerConfig
from qformer.convert import key_pairs
from qformer.qformer import QFormer

from common import environment, print_table, time_ms

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

    variants = [
        ("transformers sdpa", lambda: hf_forward(hf, hf_queries), [*hf.parameters(), hf_queries], False),
        ("transformers eager", lambda: hf_forward(hf_eager, hf_eager_queries), [*hf_eager.parameters(), hf_eager_queries], False),
        ("qformer", lambda: ours(image_tokens), list(ours.parameters()), False),
        ("qformer + fused AdamW" if device.type == "cuda" else "qformer (AdamW, fused is CUDA-only)",
         lambda: ours(image_tokens), list(ours.parameters()), True),
    ]
    if not args.no_compile:
        compiled = torch.compile(ours)
        variants.append(("qformer + fused AdamW + compile" if device.type == "cuda" else "qformer + compile", lambda: compiled(image_tokens), list(ours.parameters()), True))
        if device.type == "cuda":  # CUDA graphs: one launch for the many small kernels of 32 queries
            graphed = torch.compile(ours, mode="reduce-overhead")
            variants.append(("qformer + fused AdamW + compile, CUDA graphs", lambda: graphed(image_tokens),
                             list(ours.parameters()), True))
    reference_loss = torch.nn.functional.mse_loss(ours(image_tokens.float()).detach(), target).item()  # fp32
    rows, first_losses = [], {}
    for name, forward, params, fused in variants:
        snapshot = {k: v.clone() for k, v in ours.state_dict().items()}
        step, losses = step_fn(forward, params, fused)
        ms = time_ms(step, device, warmup=3, repeats=args.repeats)
        first_losses[name] = losses[0].item()
        drift = abs(losses[0].item() - reference_loss) / reference_loss
        rows.append({"name": name, "ms": ms, "rate": shape["batch"] / ms * 1e3, "unit": "images/s",
                     "note": f"first loss {losses[0].item():.5f} ({drift:.2%} from fp32)"})
        with torch.no_grad():  # every qformer variant starts from the same weights
            for k, v in ours.state_dict().items():
                v.copy_(snapshot[k])
    print(environment(device))
    print(f"shape: {shape}, bf16 autocast, median of {args.repeats} steps after 3 warm-up steps; "
          f"fp32 reference loss {reference_loss:.5f}")
    print_table("Q-Former training step (forward + backward + AdamW)", rows, baseline="transformers sdpa")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
