"""A frozen causal LM on onnxruntime, optionally with block-wise low-bit weights.

The LM is exported once as one graph that takes input embeddings (so the visual prompt goes straight
in), an additive attention bias and a KV cache, and returns the last position's logits and the grown
cache. `quantize="int8"` or `"int4"` then stores the MatMul weights in blocks of 32, in llama.cpp's
Q8_0 and Q4_1 formats, run by onnxruntime's `MatMulNBits` (`onnx_quantize.py`): a Q4_1 GGUF model
keeps its own weights exactly. Activations are never quantized per tensor: that is what loses the
visual prompt (the LM's MLP activations have outliers).

optimum-onnx would be the maintained exporter, but its release pins transformers below 4.58 and has
no input-embeddings decoder, so the export is our own: torch's exporter on transformers' own model.

A folder holds `model.onnx`, `embed_tokens.safetensors` (the input embeddings, to embed the text around
the prompt), the tokenizer and `engine.json`, which records the SHA-256 of both files.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .decoding import generated_length
from .extras import require
from .files import sha256_of
from .onnx_runtime import open_session
from .onnx_quantize import BLOCK

GRAPH = "model.onnx"
EMBEDDINGS = "embed_tokens.safetensors"
MANIFEST = "engine.json"
TOKENIZER_DIR = "tokenizer"
QUANTIZE_BITS = {"int8": 8, "int4": 4}
OPSET = 18
FORMAT = 3
MAX_GRAPH_BYTES = 2_000_000_000  # one ONNX protobuf cannot hold more
MASKED = float(np.finfo(np.float32).min)  # not -inf: a fully masked padding row stays finite


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
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits[:, -1].float(), *present)


def cache_names(layers: int, kind: str) -> list[str]:
    return [f"{kind}.{i}.{part}" for i in range(layers) for part in ("key", "value")]


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
    step = DecoderStep(model.eval())
    batch, length, past_length = 2, 5, 3
    example = (torch.randn(batch, length, config.hidden_size) * 0.02, torch.zeros(batch, 1, length, past_length + length),
               torch.arange(past_length, past_length + length).repeat(batch, 1),
               *[torch.randn(batch, heads, past_length, head_dim) for _ in range(2 * layers)])
    past, present = cache_names(layers, "past"), cache_names(layers, "present")
    axes = {"inputs_embeds": {0: "batch", 1: "new"}, "attention_bias": {0: "batch", 2: "new", 3: "total"},
            "position_ids": {0: "batch", 1: "new"}, "logits": {0: "batch"},
            **{n: {0: "batch", 2: "past"} for n in past}, **{n: {0: "batch", 2: "total"} for n in present}}
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        exported = Path(tmp) / GRAPH
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the tracer's notes on Python-side shape arithmetic
                torch.onnx.export(step, example, str(exported), input_names=["inputs_embeds", "attention_bias",
                                  "position_ids", *past], output_names=["logits", *present], dynamic_axes=axes,
                                  opset_version=OPSET, dynamo=False)
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
    table = model.get_input_embeddings().weight.detach().float().cpu().contiguous()
    from safetensors.torch import save_file

    save_file({"weight": table}, str(folder / EMBEDDINGS))
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
        "graph": {"file": GRAPH, "sha256": sha256_of(folder / GRAPH), "opset": OPSET},
        "embeddings": {"file": EMBEDDINGS, "sha256": sha256_of(folder / EMBEDDINGS)},
        "max_abs_logit_error_vs_torch": error,
        "generation_settings_not_applied": _greedy_changing_settings(model),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _greedy_changing_settings(model: nn.Module) -> list[str]:
    """The LM's own generation settings that `generate` would apply and this engine's plain greedy
    decoding does not (a repetition penalty...); named in the manifest and warned about."""
    from .decoding import DEFAULTS, GREEDY_CHANGING_FIELDS

    own = getattr(model, "generation_config", None)
    changed = [f for f in GREEDY_CHANGING_FIELDS if own is not None and getattr(own, f, None) != getattr(DEFAULTS, f, None)]
    if changed:
        warnings.warn(f"{type(model).__name__}'s generation config sets {changed}, which the onnxruntime engine's "
                      "greedy decoding does not apply; its answers may differ from torch's", stacklevel=3)
    return changed


def _quantize(path: Path, bits: int, head_columns: int) -> dict:
    """Block-wise weights for every MatMul (`onnx_quantize.py`), in place; the counts of each kind."""
    onnx = require("onnx", "quantizing the language model")
    from .onnx_quantize import quantize_matmuls

    graph = onnx.load(str(path))
    counts = quantize_matmuls(graph, bits, head_columns)
    for other in path.parent.iterdir():  # the float export's external data is not needed any more
        if other != path:
            other.unlink()
    onnx.save(graph, str(path))
    return counts


class OnnxCausalLM:
    """An engine folder on onnxruntime. `greedy(embeds, mask, ...)` gives the same `(B, T_new)` token
    layout as transformers' greedy `generate` from left-padded input embeddings."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        require("onnxruntime", "running the language model on onnxruntime")
        from safetensors.torch import load_file

        self.folder = Path(folder)
        manifest_path = self.folder / MANIFEST
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{manifest_path}: not a readable engine manifest ({e}); export the model again") from e
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{manifest_path}: engine format {self.manifest.get('format')!r}, this qformer reads "
                             f"{FORMAT}; export the model again")
        graph = self._verified("graph")
        table = load_file(self._verified("embeddings")).get("weight")
        if table is None or table.ndim != 2 or table.shape[1] != self.manifest["hidden_size"]:
            raise ValueError(f"{self.folder / EMBEDDINGS}: no (vocab, {self.manifest['hidden_size']}) 'weight' tensor")
        self.embeddings = table
        self.session = open_session(graph, threads)
        self.layers, self.heads, self.head_dim = (int(self.manifest[k]) for k in ("layers", "kv_heads", "head_dim"))
        self._past = cache_names(self.layers, "past")

    def _verified(self, part: str) -> Path:
        entry = self.manifest.get(part) or {}
        name = entry.get("file")
        if name not in (GRAPH, EMBEDDINGS):
            raise ValueError(f"{self.folder / MANIFEST}: {part} must be one of this folder's files, not {name!r}")
        if sha256_of(self.folder / name) != entry.get("sha256"):
            raise ValueError(f"{self.folder / name}: its SHA-256 does not match {MANIFEST}; the file is damaged or "
                             "was changed. It is left as it is: delete the folder to build it again, or export again")
        return self.folder / name

    @property
    def tokenizer_source(self) -> str:
        """The tokenizer's folder inside the engine, or the name of a built-in tokenizer."""
        name = self.manifest.get("tokenizer")
        return str(self.folder / TOKENIZER_DIR) if name == TOKENIZER_DIR else str(name)

    def _run(self, embeds: np.ndarray, bias: np.ndarray, positions: np.ndarray, cache: list[np.ndarray]):
        feeds = {"inputs_embeds": embeds, "attention_bias": bias, "position_ids": positions,
                 **dict(zip(self._past, cache))}
        logits, *present = self.session.run(None, feeds)
        return logits, present

    @torch.no_grad()
    def greedy(self, embeds: torch.Tensor, mask: torch.Tensor, *, max_new_tokens: int,
               eos_token_id: int | Sequence[int] | None, pad_token_id: int, min_new_tokens: int = 0) -> torch.Tensor:
        """New token ids `(B, T_new)` for left-padded `embeds (B, T, D)`; after a row's end of text, padding."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        keys = mask.cpu().numpy().astype(bool)  # (B, T): which slots hold real tokens
        batch, length = keys.shape
        causal = np.tril(np.ones((length, length), dtype=bool))
        # a padding row may see itself, so that no row of the softmax is empty
        allowed = (causal[None] & keys[:, None, :]) | np.eye(length, dtype=bool)[None]
        bias = np.where(allowed, 0.0, MASKED).astype(np.float32)[:, None]
        positions = np.maximum(keys.cumsum(-1) - 1, 0).astype(np.int64)
        cache = [np.zeros((batch, self.heads, 0, self.head_dim), np.float32) for _ in self._past]
        logits, cache = self._run(embeds.float().cpu().numpy(), bias, positions, cache)
        tokens = np.full((batch, max_new_tokens), pad_token_id, dtype=np.int64)
        finished = np.zeros(batch, dtype=bool)
        next_position = positions[:, -1:] + 1
        for step in range(max_new_tokens):
            if eos_ids and step < min_new_tokens:
                logits[:, eos_ids] = -np.inf
            token = logits.argmax(-1)
            tokens[:, step] = np.where(finished, pad_token_id, token)
            finished |= np.isin(token, eos_ids)
            if step + 1 == max_new_tokens or (eos_ids and finished.all()):
                break
            keys = np.concatenate([keys, np.ones((batch, 1), dtype=bool)], axis=1)
            bias = np.where(keys, 0.0, MASKED).astype(np.float32)[:, None, None, :]
            embedded = self.embeddings[torch.from_numpy(tokens[:, step])].numpy()[:, None]
            logits, cache = self._run(embedded, bias, next_position + step, cache)
        out = torch.from_numpy(tokens)
        return out[:, : generated_length(out, eos_ids)]

