"""Where batch-1 caption time goes (vision, Q-Former, LM generation), eager and compiled. GPU only."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from caption import IMAGE_TOKEN_ID, NEW_TOKENS, SHAPES
from common import time_ms
from transformers import Blip2Config, Blip2ForConditionalGeneration, ByT5Tokenizer

import qformer
from qformer.bridge.convert import convert_from_transformers

device = torch.device("cuda")
shape, dtype = SHAPES["paper"], torch.bfloat16
work = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
if not (work / "ours").exists():
    config = Blip2Config(vision_config=shape["vision"], qformer_config=shape["qformer"], text_config=shape["text"],
                         num_query_tokens=32, image_token_index=IMAGE_TOKEN_ID)
    with torch.device(device):
        Blip2ForConditionalGeneration(config).to(dtype).save_pretrained(work / "hf")
    tokenizer = ByT5Tokenizer()
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    tokenizer.save_pretrained(work / "hf")
    convert_from_transformers(str(work / "hf"), work / "ours")
ours = qformer.Blip2.from_pretrained(work / "ours",
                                     **{"vision.dtype": "bfloat16", "lm.dtype": "bfloat16"}).to(device).eval()
pixels = torch.randn(1, 3, 224, 224, device=device)
ids = torch.full((1, 32), IMAGE_TOKEN_ID, device=device)
gen = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0, eos_token_id=1)
with torch.no_grad():
    tokens = ours.vision(pixels)
    queries = ours.query_outputs(tokens)
    prefix = ours.project(queries)
    embeds, mask = ours.lm.embed_with_prefix(prefix, ids)
    rows = {
        "vision (eager)": lambda: ours.vision(pixels),
        "q-former (eager)": lambda: ours.query_outputs(tokens),
        "generate, dynamic cache": lambda: ours.lm.generate_from_embeds(embeds, mask, **gen),
        # repetition_penalty=1.0 changes no logit but is an option our loop does not take: transformers' loop runs
        "generate, static cache, transformers' loop": lambda: ours.lm.generate_from_embeds(
            embeds, mask, cache_implementation="static", repetition_penalty=1.0, **gen),
        "generate, static cache, our loop": lambda: ours.lm.generate_from_embeds(
            embeds, mask, cache_implementation="static", **gen),
    }
    ours.vision.backbone = torch.compile(ours.vision.backbone, mode="reduce-overhead")
    ours.qformer = torch.compile(ours.qformer, mode="reduce-overhead")
    rows["vision (CUDA graphs)"] = lambda: ours.vision(pixels)
    rows["q-former (CUDA graphs)"] = lambda: ours.query_outputs(tokens)
    rows["whole caption, all compiled + static cache"] = lambda: ours.generate(pixels, ids,
                                                                               cache_implementation="static", **gen)
    for name, fn in rows.items():
        print(f"| {name} | {time_ms(fn, device, warmup=3, repeats=5):.1f} ms |", flush=True)
