"""A Llama-architecture GGUF language model as an onnxruntime engine folder, built without torch.

`deploy/onnx_lm.py` exports any transformers causal LM through torch. A GGUF file of the Llama
family (SmolLM2, the default's LM, among them) needs neither: its tensors are read and dequantized
by the `gguf` package, the decoder step is written here as the graph transformers' `LlamaForCausalLM`
computes (RMSNorm, rotary positions, grouped-query attention over a KV cache, a SwiGLU MLP), and its
tokenizer is the byte-level BPE the file describes. The folder is the one `export_causal_lm` writes
(same inputs, outputs, block-wise weights and manifest), so `deploy/engine.py` runs it as any other.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..extras import require
from ..files import with_default_mode
from .engine import EMBEDDINGS, FORMAT, GRAPH, GRAPH_WEIGHTS, MANIFEST, TOKENIZER_DIR, cache_names, engine_files
from .onnx_builder import GraphBuilder
from .quantize import BLOCK
from .runtime import save_for_loading

OPSET = 18
QUANTIZE_BITS = {"int8": 8, "int4": 4}
ROWS_AT_ONCE = 4096  # rows dequantized together: the vocabulary's 49152 at once took 3 times the table
CONTROL_TOKEN_TYPES = (3, 4)  # GGUF's control and user-defined tokens: special, never split


class NotLlama(ValueError):
    """A readable GGUF file of another architecture (torch's exporter may still take it)."""


class GGUFLlama:
    """A Llama-family GGUF file's shape, float32 tensors (torch's `(out, in)` layout) and tokenizer."""

    def __init__(self, path: str | Path):
        gguf = require("gguf", "reading a GGUF language model without torch")
        self.path = Path(path)
        try:
            self.reader = gguf.GGUFReader(str(self.path))
            architecture = self.field("general.architecture")
        except (OSError, ValueError, KeyError, IndexError) as e:
            raise ValueError(f"{self.path}: not a readable GGUF file ({type(e).__name__}: {e})") from e
        if architecture != "llama":
            raise NotLlama(f"{self.path}: a {architecture!r} model; only the Llama architecture builds without "
                             "torch. Install torch to export it (qformer export --onnx)")
        key = "llama."
        self.layers = int(self.field(key + "block_count"))
        self.hidden = int(self.field(key + "embedding_length"))
        self.heads = int(self.field(key + "attention.head_count"))
        self.kv_heads = int(self.field(key + "attention.head_count_kv", self.heads))
        self.eps = float(self.field(key + "attention.layer_norm_rms_epsilon"))
        self.rope_base = float(self.field(key + "rope.freq_base", 10000.0))
        self._check_shape()
        self.head_dim = self.hidden // self.heads
        if int(self.field(key + "rope.dimension_count", self.head_dim)) != self.head_dim:
            raise ValueError(f"{self.path}: rotary positions on part of each head are not built without torch; "
                             "export it with torch instead")
        if self.field(key + "rope.scaling.type", None) not in (None, "none"):
            raise ValueError(f"{self.path}: rotary scaling is not built without torch; export it with torch instead")
        self.tensors = {t.name: t for t in self.reader.tensors}

    def _check_shape(self) -> None:
        """The file's numbers may come from someone else: they must describe a Llama model."""
        sizes = {"layers": self.layers, "hidden": self.hidden, "heads": self.heads, "kv_heads": self.kv_heads}
        if any(not 1 <= n <= high for n, high in zip(sizes.values(), (1024, 65536, 1024, 1024))) \
                or self.hidden % self.heads or self.heads % self.kv_heads or (self.hidden // self.heads) % 2 \
                or not (0 < self.eps < 1 and 0 < self.rope_base < float("inf")):
            raise ValueError(f"{self.path}: {sizes} (epsilon {self.eps}, rotary base {self.rope_base}) are no Llama "
                             "model's; the file is damaged or not a language model")

    def field(self, name: str, default=KeyError):
        entry = self.reader.fields.get(name)
        if entry is None:
            if default is KeyError:
                raise ValueError(f"{self.path}: no {name!r} entry; not a complete Llama GGUF file")
            return default
        return entry.contents()

    def weight(self, name: str) -> np.ndarray:
        from gguf.quants import dequantize

        tensor = self.tensors.get(name)
        if tensor is None:
            raise ValueError(f"{self.path}: no tensor {name!r}; not a complete Llama GGUF file")
        shape = [int(n) for n in reversed(tensor.shape)]
        try:
            data = tensor.data.reshape(shape[0], -1)  # a row of blocks per output
            array = np.empty(shape, np.float32)
            for start in range(0, shape[0], ROWS_AT_ONCE):  # the dequantizer's temporaries stay small
                rows = dequantize(data[start:start + ROWS_AT_ONCE], tensor.tensor_type)
                array[start:start + ROWS_AT_ONCE] = rows.reshape(-1, *shape[1:])
            return array
        except (ValueError, NotImplementedError) as e:  # a cut-off file, or a block format gguf cannot read
            raise ValueError(f"{self.path}: not a readable GGUF file ({name}: {e})") from e

    def attention_weight(self, name: str, heads: int) -> np.ndarray:
        """llama.cpp stores the query and key weights with each head's rotary halves interleaved;
        this undoes it, giving transformers' layout (the two halves of each head in turn)."""
        weight = self.weight(name)
        return weight.reshape(heads, self.head_dim // 2, 2, -1).swapaxes(1, 2).reshape(weight.shape)

    def tokenizer_json(self) -> dict:
        """The byte-level BPE tokenizer of the file (`tokenizer.ggml.model` gpt2), in tokenizers' JSON."""
        if self.field("tokenizer.ggml.model") != "gpt2":
            raise ValueError(f"{self.path}: its tokenizer is {self.field('tokenizer.ggml.model')!r}; only byte-level "
                             "BPE (gpt2) builds without transformers")
        tokens, types = self.field("tokenizer.ggml.tokens"), self.field("tokenizer.ggml.token_type")
        merges = [merge.split(" ", 1) for merge in self.field("tokenizer.ggml.merges")]
        special = [{"id": i, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
                    "normalized": False, "special": True}
                   for i, (token, kind) in enumerate(zip(tokens, types)) if kind in CONTROL_TOKEN_TYPES]
        byte_level = {"type": "ByteLevel", "add_prefix_space": bool(self.field("tokenizer.ggml.add_space_prefix",
                                                                               False)),
                      "trim_offsets": True, "use_regex": True}
        return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": special, "normalizer": None,
                "pre_tokenizer": byte_level,
                "post_processor": {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}],
                                   "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                                            {"Sequence": {"id": "B", "type_id": 1}}], "special_tokens": {}},
                "decoder": {**byte_level, "add_prefix_space": True},
                "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                          "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                          "vocab": {token: i for i, token in enumerate(tokens)}, "merges": merges}}

    def tokenizer_config(self) -> dict:
        tokens = self.field("tokenizer.ggml.tokens")

        def token(name: str) -> str | None:
            index = self.field(f"tokenizer.ggml.{name}_token_id", None)
            return tokens[int(index)] if index is not None and 0 <= int(index) < len(tokens) else None

        # a class every transformers release reads (5.x reads it as its `TokenizersBackend`)
        return {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                "bos_token": token("bos"), "eos_token": token("eos"), "pad_token": token("padding") or token("eos"),
                "unk_token": token("unknown")}


def decoder_step_graph(model: GGUFLlama, head: np.ndarray, bits: int | None = None):
    """(inputs_embeds, attention_bias, position_ids, past K/V per layer) -> (last logits, present K/V),
    as `deploy/onnx_lm.py`'s `DecoderStep` exports it. `head`: the output projection `(vocab, hidden)`,
    kept float; every other projection in `bits`-bit blocks (None: float), as `quantize_matmuls` makes
    them: the query, key and value projections as one, the gate and up projections as one."""
    g = GraphBuilder("building the language model's graph")
    heads, kv_heads, head_dim, hidden = model.heads, model.kv_heads, model.head_dim, model.hidden
    group = heads // kv_heads

    def rms_norm(x: str, weight: str) -> str:
        variance = g("ReduceMean", g("Mul", x, x), g.const(np.array([-1], np.int64)), keepdims=1)
        scaled = g("Mul", x, g("Reciprocal", g("Sqrt", g("Add", variance, g.const(np.float32(model.eps))))))
        return g("Mul", scaled, g.const(model.weight(weight)))

    # rotary positions: cos and sin (B, 1, T, head_dim), shared by every layer
    inverse = 1.0 / (model.rope_base ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))
    positions = g("Unsqueeze", g("Cast", "position_ids", to=1), g.const(np.array([-1], np.int64)))
    angles = g("Mul", positions, g.const(inverse.astype(np.float32)))
    angles = g("Unsqueeze", g("Concat", angles, angles, axis=-1), g.const(np.array([1], np.int64)))
    cos, sin = g("Cos", angles), g("Sin", angles)

    def rotated(x: str) -> str:  # x * cos + rotate_half(x) * sin
        first, second = g.many("Split", x, g.const(np.array([head_dim // 2] * 2, np.int64)), outputs=2, axis=-1)
        half = g("Concat", g("Neg", second), first, axis=-1)
        return g("Add", g("Mul", x, cos), g("Mul", half, sin))

    def split_heads(x: str, count: int) -> str:  # (B, T, count * head_dim) -> (B, count, T, head_dim)
        return g("Transpose", g("Reshape", x, g.const(np.array([0, 0, count, head_dim], np.int64))), perm=[0, 2, 1, 3])

    bias = g("Unsqueeze", "attention_bias", g.const(np.array([1], np.int64)))  # (B, 1, 1, T, S)
    x, presents = "inputs_embeds", []
    for i in range(model.layers):
        block = f"blk.{i}"
        normed = rms_norm(x, f"{block}.attn_norm.weight")
        q, k, v = g.projections(normed, [model.attention_weight(f"{block}.attn_q.weight", heads),
                                         model.attention_weight(f"{block}.attn_k.weight", kv_heads),
                                         model.weight(f"{block}.attn_v.weight")], bits)
        q, k, v = rotated(split_heads(q, heads)), rotated(split_heads(k, kv_heads)), split_heads(v, kv_heads)
        k = g("Concat", f"past.{i}.key", k, axis=2, out=f"present.{i}.key")
        v = g("Concat", f"past.{i}.value", v, axis=2, out=f"present.{i}.value")
        presents += [k, v]
        # grouped queries: (B, kv_heads, group, T, head_dim) against (B, kv_heads, 1, S, head_dim)
        grouped = g("Reshape", q, g.const(np.array([0, kv_heads, group, -1, head_dim], np.int64)))
        one_more = g.const(np.array([2], np.int64))
        scores = g("MatMul", grouped, g("Transpose", g("Unsqueeze", k, one_more), perm=[0, 1, 2, 4, 3]))
        scores = g("Add", g("Mul", scores, g.const(np.float32(head_dim ** -0.5))), bias)
        attended = g("MatMul", g("Softmax", scores, axis=-1), g("Unsqueeze", v, one_more))
        attended = g("Reshape", g("Transpose", g("Reshape", attended, g.const(
            np.array([0, heads, -1, head_dim], np.int64))), perm=[0, 2, 1, 3]),
            g.const(np.array([0, 0, hidden], np.int64)))
        (out,) = g.projections(attended, [model.weight(f"{block}.attn_output.weight")], bits)
        x = g("Add", x, out)
        normed = rms_norm(x, f"{block}.ffn_norm.weight")
        gate, up = g.projections(normed, [model.weight(f"{block}.ffn_gate.weight"),
                                          model.weight(f"{block}.ffn_up.weight")], bits)
        (down,) = g.projections(g("Mul", g("Mul", gate, g("Sigmoid", gate)), up),
                                [model.weight(f"{block}.ffn_down.weight")], bits)
        x = g("Add", x, down)
    last = g("Gather", rms_norm(x, "output_norm.weight"), g.const(np.int64(-1)), axis=1)  # (B, hidden)
    g("MatMul", last, g.const(np.ascontiguousarray(head.T)), out="logits")
    g.count("kept_float", 1)
    vocab = len(model.field("tokenizer.ggml.tokens"))
    cache = ["batch", kv_heads, "past", head_dim]
    inputs = [("inputs_embeds", "FLOAT", ["batch", "length", hidden]),
              ("attention_bias", "FLOAT", ["batch", 1, "length", "total"]),
              ("position_ids", "INT64", ["batch", "length"]),
              *((name, "FLOAT", cache) for name in cache_names(model.layers, "past"))]
    outputs = [("logits", "FLOAT", ["batch", vocab]),
               *((name, "FLOAT", ["batch", kv_heads, "total", head_dim]) for name in cache_names(model.layers,
                                                                                                   "present"))]
    # not checked by onnx, which would copy a graph of a few hundred MB twice more on a small device:
    # onnxruntime checks it as it loads it, and tests/test_gguf.py decodes with it against transformers
    graph = g.model("llama_decoder_step", inputs, outputs, OPSET, extra_domains=("com.microsoft",) if bits else (),
                    check=False)
    return graph, g.counts


def build_gguf_engine(gguf_path: str | Path, folder: Path, quantize: str | None = "int4") -> dict:
    """Write the engine folder of a Llama GGUF file into `folder` (made here); return its manifest."""
    onnx = require("onnx", "building the language model's graph")
    from safetensors.numpy import save_file

    if quantize is not None and quantize not in QUANTIZE_BITS:
        raise ValueError(f"quantize must be one of {sorted(QUANTIZE_BITS)} or None, got {quantize!r}")
    model = GGUFLlama(gguf_path)
    table = model.weight("token_embd.weight")
    head = model.weight("output.weight") if "output.weight" in model.tensors else table  # tied when absent
    graph, counts = decoder_step_graph(model, head, QUANTIZE_BITS.get(quantize))
    del head
    folder.mkdir(parents=True, exist_ok=True)
    # its weights apart: onnxruntime maps them as it optimizes the graph instead of parsing a copy
    unoptimized = ".unoptimized.weights"
    onnx.save(graph, str(folder / GRAPH), save_as_external_data=True, location=unoptimized, size_threshold=1024)
    del graph
    save_for_loading(folder / GRAPH, GRAPH_WEIGHTS)
    (folder / unoptimized).unlink()
    save_file({"weight": np.ascontiguousarray(table)}, str(folder / EMBEDDINGS))
    for name in (GRAPH, GRAPH_WEIGHTS, EMBEDDINGS):
        with_default_mode(folder / name)
    (folder / TOKENIZER_DIR).mkdir()
    (folder / TOKENIZER_DIR / "tokenizer.json").write_text(json.dumps(model.tokenizer_json(), ensure_ascii=False))
    (folder / TOKENIZER_DIR / "tokenizer_config.json").write_text(json.dumps(model.tokenizer_config(), indent=1))
    manifest = {
        "format": FORMAT, "architecture": "LlamaForCausalLM", "built_from": "gguf", "quantize": quantize,
        "block_size": BLOCK if quantize else None, "quantized_matmuls": counts if quantize else None,
        "layers": model.layers, "kv_heads": model.kv_heads, "head_dim": model.head_dim, "hidden_size": model.hidden,
        "tokenizer": TOKENIZER_DIR,
        **engine_files(folder, OPSET),
        "generation_settings_not_applied": [],
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest
