"""A frozen causal LM on onnxruntime, optionally with block-wise low-bit weights.

The LM is exported once as one graph that takes input embeddings (so the visual prompt goes straight
in), an additive attention bias and a KV cache, and returns the last position's logits and the grown
cache. `quantize="int8"` or `"int4"` then stores the MatMul weights in blocks of 32, in llama.cpp's
Q8_0 and Q4_1 formats, run by onnxruntime's `MatMulNBits` (`deploy/quantize.py`): a Q4_1 GGUF model
keeps its own weights exactly. Activations are never quantized per tensor: that is what loses the
visual prompt (the LM's MLP activations have outliers).

optimum-onnx would be the maintained exporter, but its release pins transformers below 4.58 and has
no input-embeddings decoder, so the export is our own: torch's exporter on transformers' own model.

A folder holds `model.onnx`, `embed_tokens.safetensors` (the input embeddings, to embed the text around
the prompt), the tokenizer and `engine.json`, which records the SHA-256 of both files. It runs
without torch (`deploy/engine.py`).
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..extras import require
from ..files import with_default_mode
from ..lm.steps import cache_argument, returned_cache
from .engine import EMBEDDINGS, FORMAT, GRAPH, GRAPH_WEIGHTS, MANIFEST, TOKENIZER_DIR, cache_names, engine_files
from .quantize import BLOCK
from .runtime import save_for_loading

QUANTIZE_BITS = {"int8": 8, "int4": 4}
OPSET = 18
MAX_GRAPH_BYTES = 2_000_000_000  # one ONNX protobuf cannot hold more


class DecoderStep(nn.Module):
    """(embeds, bias, positions, past K/V per layer) -> (last logits, present K/V per layer)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.layers = model.config.num_hidden_layers

    def forward(self, inputs_embeds, attention_bias, position_ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_bias, position_ids=position_ids,
                         use_cache=True, logits_to_keep=1, **{cache_argument(self.model): cache})
        present = [t for layer in returned_cache(out).layers for t in (layer.keys, layer.values)]
        return (out.logits[:, -1].float(), *present)


def kv_shape(config) -> tuple[int, int]:
    heads = config.num_key_value_heads or config.num_attention_heads
    return heads, getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def export_causal_lm(model: nn.Module, tokenizer, folder: Path, quantize: str | None = None,
                     builtin_tokenizer: str | None = None) -> dict:
    """Write the engine folder for a transformers causal LM (float32 weights); return its manifest.
    Raises ValueError, with the reason, when the architecture does not export."""
    ort = require("onnxruntime", "running the language model on onnxruntime")
    if quantize is not None and quantize not in QUANTIZE_BITS:
        raise ValueError(f"quantize must be one of {sorted(QUANTIZE_BITS)} or None, got {quantize!r}")
    config = model.config
    layers, (heads, head_dim) = config.num_hidden_layers, kv_shape(config)
    if next(model.parameters()).dtype != torch.float32:  # export a float32 copy; the caller's model stays as it is
        model = copy.deepcopy(model).float()
    step = DecoderStep(model.eval()).eval()
    batch, length, past_length = 2, 5, 3
    example = (torch.randn(batch, length, config.hidden_size) * 0.02,
               torch.zeros(batch, 1, length, past_length + length),
               torch.arange(past_length, past_length + length).repeat(batch, 1),
               *[torch.randn(batch, heads, past_length, head_dim) for _ in range(2 * layers)])
    past, present = cache_names(layers, "past"), cache_names(layers, "present")
    # batch, new tokens, past and total lengths: each dynamic, and how they relate is traced (total = past + new)
    dynamic = torch.export.Dim.AUTO
    shapes = ({0: dynamic, 1: dynamic}, {0: dynamic, 2: dynamic, 3: dynamic}, {0: dynamic, 1: dynamic},
              tuple({0: dynamic, 2: dynamic} for _ in past))
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        exported = Path(tmp) / GRAPH
        try:
            require("onnxscript", "exporting the language model (torch's exporter writes graphs with it)")
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore", UserWarning)  # the exporter's notes on its own progress
                torch.onnx.export(step, example, str(exported), input_names=["inputs_embeds", "attention_bias",
                                  "position_ids", *past], output_names=["logits", *present], dynamic_shapes=shapes,
                                  opset_version=OPSET, dynamo=True, external_data=False, verbose=False)
        except Exception as e:  # noqa: BLE001 -- any exporter failure means "this architecture does not export"
            raise ValueError(f"{type(model).__name__} does not export to ONNX with a KV cache ({type(e).__name__}: "
                             f"{e}); run the language model in torch instead") from e
        counts = None
        if quantize is not None:
            counts = _quantize(exported, QUANTIZE_BITS[quantize], model.get_input_embeddings().num_embeddings)
        # a float graph over 2 GB comes with external data files, outside the one hash-checked file
        one_file = [p.name for p in Path(tmp).iterdir()] == [GRAPH] and exported.stat().st_size < MAX_GRAPH_BYTES
        if not one_file:
            raise ValueError(f"the exported {type(model).__name__} graph is over 2 GB, more than one ONNX file holds; "
                             "quantize it (lm.quantize='int4') or run the language model in torch")
        shutil.move(exported, folder / GRAPH)
    save_for_loading(folder / GRAPH, GRAPH_WEIGHTS)
    for name in (GRAPH, GRAPH_WEIGHTS):
        with_default_mode(folder / name)
    table = model.get_input_embeddings().weight.detach().float().cpu().contiguous()
    from safetensors.torch import save_file

    save_file({"weight": table}, str(folder / EMBEDDINGS))
    with_default_mode(folder / EMBEDDINGS)
    if builtin_tokenizer is None:
        tokenizer.save_pretrained(folder / TOKENIZER_DIR)
    session = ort.InferenceSession(str(folder / GRAPH), providers=["CPUExecutionProvider"])
    feeds = {name: value.numpy() for name, value in zip(["inputs_embeds", "attention_bias", "position_ids", *past],
                                                        example)}
    with torch.no_grad():
        expected = step(*example)[0]
    error = float(np.abs(session.run(["logits"], feeds)[0] - expected.numpy()).max())
    manifest = {
        "format": FORMAT, "architecture": type(model).__name__, "quantize": quantize,
        "block_size": BLOCK if quantize else None, "quantized_matmuls": counts,
        "layers": layers, "kv_heads": heads, "head_dim": head_dim, "hidden_size": config.hidden_size,
        "tokenizer": builtin_tokenizer or TOKENIZER_DIR,
        **engine_files(folder, OPSET),
        "max_abs_logit_error_vs_torch": error,
        "generation_settings_not_applied": _greedy_changing_settings(model),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _greedy_changing_settings(model: nn.Module) -> list[str]:
    """The LM's own generation settings that `generate` would apply and this engine's plain greedy
    decoding does not (a repetition penalty...); named in the manifest and warned about."""
    from ..lm.decoding import DEFAULTS, GREEDY_CHANGING_FIELDS

    own = getattr(model, "generation_config", None)
    changed = [f for f in GREEDY_CHANGING_FIELDS
               if own is not None and getattr(own, f, None) != getattr(DEFAULTS, f, None)]
    if changed:
        warnings.warn(f"{type(model).__name__}'s generation config sets {changed}, which the onnxruntime engine's "
                      "greedy decoding does not apply; its answers may differ from torch's", stacklevel=3)
    return changed


def _quantize(path: Path, bits: int, head_columns: int) -> dict:
    """Block-wise weights for every MatMul (`deploy/quantize.py`), in place; the counts of each kind."""
    onnx = require("onnx", "quantizing the language model")
    from .quantize import quantize_matmuls

    graph = onnx.load(str(path))
    counts = quantize_matmuls(graph, bits, head_columns)
    for other in path.parent.iterdir():  # the float export's external data is not needed any more
        if other != path:
            other.unlink()
    onnx.save(graph, str(path))
    return counts
