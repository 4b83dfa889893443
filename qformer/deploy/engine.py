"""A frozen causal LM's engine folder on onnxruntime, run with numpy alone (no torch): the graph
exported by `deploy/onnx_lm.py` (or `deploy/llama_graph.py`), its weights, its input embeddings and its tokenizer,
each checked against the SHA-256 in `engine.json` before use.

Decoding is greedy: the prompt in one pass, then one token per step with the KV cache, the same
`(B, T_new)` tokens as transformers' greedy `generate` from left-padded input embeddings.
"""

from __future__ import annotations

import json
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from ..extras import require
from ..files import OutsideFolderError, inside, native_errors, sha256_of
from ..lm.steps import generated_length
from ..processing.prompts import check_generation
from .runtime import open_session

GRAPH = "model.onnx"
GRAPH_WEIGHTS = "model.weights"  # the graph's initializers, beside it (`runtime.save_for_loading`)
EMBEDDINGS = "embed_tokens.safetensors"
MANIFEST = "engine.json"
TOKENIZER_DIR = "tokenizer"
FORMAT = 4
READABLE_FORMATS = (3, 4)  # 3: the weights inside the graph file
PARTS = {"graph": GRAPH, "weights": GRAPH_WEIGHTS, "embeddings": EMBEDDINGS}  # hashed in the manifest
MASKED = float(np.finfo(np.float32).min)  # not -inf: a fully masked padding row stays finite
MAX_HEADER_BYTES = 1 << 20  # a safetensors header naming one tensor is a few hundred bytes
# what a manifest may say of the model's shape, checked again against the graph itself
SHAPE_BOUNDS = {"layers": 1024, "kv_heads": 1024, "head_dim": 4096, "hidden_size": 65536}


def engine_files(folder: Path, opset: int) -> dict[str, dict]:
    """The manifest's entries for the graph, its weights and the embeddings an exporter wrote."""
    entries = {part: {"file": name, "sha256": sha256_of(folder / name)} for part, name in PARTS.items()}
    entries["graph"]["opset"] = opset
    return entries


def cache_names(layers: int, kind: str) -> list[str]:
    return [f"{kind}.{i}.{part}" for i in range(layers) for part in ("key", "value")]


def mapped_table(path: Path, width: int) -> np.ndarray:
    """The `(rows, width)` float32 tensor `weight` of a safetensors file, mapped, not read: a lookup
    brings in only the rows it touches. The header may come from someone else: it is checked."""
    size = path.stat().st_size
    with path.open("rb") as stream:
        (length,) = struct.unpack("<Q", stream.read(8).ljust(8, b"\0"))
        header = stream.read(length) if 0 < length <= min(MAX_HEADER_BYTES, size - 8) else b""
    try:
        entry = json.loads(header)["weight"]
        begin, end = (int(x) for x in entry["data_offsets"])
        rows, columns = (int(x) for x in entry["shape"])
        dtype = entry["dtype"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: no readable 'weight' tensor ({type(e).__name__}); export the model again") from e
    if dtype != "F32" or columns != width or rows < 1 or end - begin != rows * columns * 4 or begin < 0 \
            or 8 + length + end > size:
        raise ValueError(f"{path}: 'weight' must be a (vocab, {width}) float32 tensor inside the file; "
                         "export the model again")
    return np.memmap(path, dtype=np.float32, mode="c", offset=8 + length + begin, shape=(rows, columns))


class OnnxCausalLM:
    """An engine folder on onnxruntime: `embed(ids)` and `greedy(embeds, mask, ...)`, numpy in and out."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        require("onnxruntime", "running the language model on onnxruntime")
        self.folder = Path(folder)
        manifest_path = self.folder / MANIFEST
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{manifest_path}: not a readable engine manifest ({e}); export the model again") from e
        if not isinstance(self.manifest, dict):
            raise ValueError(f"{manifest_path}: not an engine manifest (a JSON object); export the model again")
        if self.manifest.get("format") not in READABLE_FORMATS:
            raise ValueError(f"{manifest_path}: engine format {self.manifest.get('format')!r}, this qformer reads "
                             f"{' and '.join(map(str, READABLE_FORMATS))}; export the model again")
        shape = self._shape(manifest_path)
        graph = self._verified("graph")  # before onnxruntime parses it
        self.embeddings = mapped_table(self._opened(graph, threads), shape["hidden_size"])
        self.layers, self.heads, self.head_dim = shape["layers"], shape["kv_heads"], shape["head_dim"]
        self._past = cache_names(self.layers, "past")
        self._check_graph(manifest_path, shape)

    def _shape(self, manifest_path: Path) -> dict[str, int]:
        try:
            shape = {key: self.manifest[key] for key in SHAPE_BOUNDS}
        except KeyError as e:
            raise ValueError(f"{manifest_path}: no {e} entry; export the model again") from None
        for key, high in SHAPE_BOUNDS.items():
            if not isinstance(shape[key], int) or isinstance(shape[key], bool) or not 1 <= shape[key] <= high:
                raise ValueError(f"{manifest_path}: {key}={shape[key]!r} is no model's; export the model again")
        return shape

    def _check_graph(self, manifest_path: Path, shape: dict[str, int]) -> None:
        """The manifest's numbers are the graph's own: its cache inputs and their fixed sizes."""
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        expected = {"inputs_embeds", "attention_bias", "position_ids", *self._past}
        fixed = [inputs.get(name, [None] * 4)[1::2] for name in self._past]  # (heads, head_dim) of each cache
        if set(inputs) != expected or inputs["inputs_embeds"][-1] != shape["hidden_size"] or any(
                dims != [shape["kv_heads"], shape["head_dim"]] for dims in fixed):
            raise ValueError(f"{manifest_path}: its layers, heads or sizes are not those of {GRAPH}; the manifest was "
                             "changed. Export the model again")

    def _opened(self, graph: Path, threads: int | None) -> Path:
        """Open the session while the graph's weights and the embeddings are hashed beside it (hashing
        releases the GIL: about 0.2 s of a drawing's first caption). A mismatch is what is reported,
        before any error the session met. Returns the embeddings' path."""
        parts = ["embeddings"] + (["weights"] if self.manifest["format"] > 3 else [])
        with ThreadPoolExecutor(len(parts), thread_name_prefix="engine-hash") as pool:
            checks = [pool.submit(self._verified, part) for part in parts]
            try:
                self.session = open_session(graph, threads)
            finally:
                paths = [check.result() for check in checks]
        return paths[0]

    def _verified(self, part: str) -> Path:
        entry = self.manifest.get(part)
        entry = entry if isinstance(entry, dict) else {}
        name, expected = entry.get("file"), PARTS[part]
        if name != expected:
            raise ValueError(f"{self.folder / MANIFEST}: the {part} file must be {expected}, not {name!r}; export "
                             "the model again")
        try:
            path = inside(self.folder, name, str(self.folder / MANIFEST))
        except OutsideFolderError as e:
            raise ValueError(str(e)) from None
        if not path.is_file() or sha256_of(path) != entry.get("sha256"):
            raise ValueError(f"{self.folder / name}: missing, or its SHA-256 does not match {MANIFEST}; the file is "
                             "damaged or was changed. It is left as it is: delete the folder to build it again, or "
                             "export again")
        return path

    @property
    def tokenizer_source(self) -> str:
        """The tokenizer's folder inside the engine, or the name of a built-in tokenizer."""
        name = self.manifest.get("tokenizer")
        if name != TOKENIZER_DIR:
            return str(name)
        try:
            return str(inside(self.folder, TOKENIZER_DIR, str(self.folder / MANIFEST)))
        except OutsideFolderError as e:
            raise ValueError(str(e)) from None

    def _run(self, embeds: np.ndarray, bias: np.ndarray, positions: np.ndarray, cache: list[np.ndarray]):
        feeds = {"inputs_embeds": embeds, "attention_bias": bias, "position_ids": positions,
                 **dict(zip(self._past, cache))}
        with native_errors(self.folder / GRAPH, "running the language model", "export the model again"):
            logits, *present = self.session.run(None, feeds)
        return logits, present

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """Input embeddings `(..., D)` of token ids."""
        return np.asarray(self.embeddings[ids])

    def greedy(self, embeds: np.ndarray, mask: np.ndarray, *, max_new_tokens: int,
               eos_token_id: int | Sequence[int] | None, pad_token_id: int, min_new_tokens: int = 0) -> np.ndarray:
        """New token ids `(B, T_new)` for left-padded `embeds (B, T, D)`; after a row's end of text, padding."""
        check_generation({"max_new_tokens": max_new_tokens})
        eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        keys = np.asarray(mask).astype(bool)  # (B, T): which slots hold real tokens
        batch, length = keys.shape
        causal = np.tril(np.ones((length, length), dtype=bool))
        # a padding row may see itself, so that no row of the softmax is empty
        allowed = (causal[None] & keys[:, None, :]) | np.eye(length, dtype=bool)[None]
        bias = np.where(allowed, 0.0, MASKED).astype(np.float32)[:, None]
        positions = np.maximum(keys.cumsum(-1) - 1, 0).astype(np.int64)
        cache = [np.zeros((batch, self.heads, 0, self.head_dim), np.float32) for _ in self._past]
        logits, cache = self._run(np.asarray(embeds, dtype=np.float32), bias, positions, cache)
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
            logits, cache = self._run(self.embed(tokens[:, step])[:, None], bias, next_position + step, cache)
        return tokens[:, : generated_length(tokens, eos_ids)]
