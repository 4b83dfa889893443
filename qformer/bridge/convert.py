"""Conversion to and from transformers' `Blip2ForConditionalGeneration` layout.

A converted qformer folder is self-contained: the frozen backbones go to `vision/` and `lm/`
beside the bridge, and `config.json` names them as `./vision` and `./lm` (paths relative to the
folder). transformers' layout has no stage-1 heads, Q-Former text embeddings or (usually) text
feed-forward blocks; an import leaves those at their fresh init and says so.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    Blip2VisionModel,
    BlipImageProcessor,
)
from transformers import (
    Blip2Config as HFBlip2Config,
)

from ..config import Blip2Config, QFormerConfig, resolve_relative_paths
from ..lm.frozen_lm import IMAGE_TOKEN
from ..pretrained.weights import load_safetensors_model
from ..vision.encoders.hf_encoder import HFVisionEncoder
from .checkpoint import CheckpointError
from .model import Blip2

log = logging.getLogger(__name__)


def key_pairs(config: QFormerConfig, with_text_ffn: bool) -> dict[str, list[str]]:
    """qformer key -> the transformers keys it is made of (concatenated along dim 0, in order)."""
    pairs = {"qformer.query_tokens": ["query_tokens"]}
    for w in ("weight", "bias"):
        pairs[f"qformer.embed_norm.{w}"] = [f"qformer.layernorm.{w}"]
        pairs[f"projection.{w}"] = [f"language_projection.{w}"]
        for i in range(config.num_layers):
            ours, theirs = f"qformer.layers.{i}.", f"qformer.encoder.layer.{i}."
            qkv = ("query", "key", "value")
            pairs[ours + f"self_attn.qkv.{w}"] = [theirs + f"attention.attention.{p}.{w}" for p in qkv]
            pairs[ours + f"self_attn.out.{w}"] = [theirs + f"attention.output.dense.{w}"]
            pairs[ours + f"self_attn.norm.{w}"] = [theirs + f"attention.output.LayerNorm.{w}"]
            if i % config.cross_attention_freq == 0:
                pairs[ours + f"cross_attn.q.{w}"] = [theirs + f"crossattention.attention.query.{w}"]
                pairs[ours + f"cross_attn.kv.{w}"] = [theirs + f"crossattention.attention.{p}.{w}" for p in qkv[1:]]
                pairs[ours + f"cross_attn.out.{w}"] = [theirs + f"crossattention.output.dense.{w}"]
                pairs[ours + f"cross_attn.norm.{w}"] = [theirs + f"crossattention.output.LayerNorm.{w}"]
            ffns = [("query_ffn", "intermediate_query", "output_query")]
            if with_text_ffn:
                ffns.append(("text_ffn", "intermediate", "output"))
            for ffn, intermediate, output in ffns:
                pairs[ours + f"{ffn}.fc1.{w}"] = [theirs + f"{intermediate}.dense.{w}"]
                pairs[ours + f"{ffn}.fc2.{w}"] = [theirs + f"{output}.dense.{w}"]
                pairs[ours + f"{ffn}.norm.{w}"] = [theirs + f"{output}.LayerNorm.{w}"]
    return pairs


def config_from_transformers(hf_config: HFBlip2Config) -> Blip2Config:
    q = hf_config.qformer_config
    if q.hidden_act != "gelu":
        raise CheckpointError(f"Q-Former hidden_act={q.hidden_act!r}: qformer's layers implement 'gelu' only")
    kind = "causal" if hf_config.use_decoder_only_language_model else "seq2seq"
    return Blip2Config.from_dict({
        "name": "imported-blip2",
        "vision": {"backend": "transformers", "model_name": "Blip2VisionModel", "pretrained": "./vision"},
        "qformer": {
            "num_queries": hf_config.num_query_tokens, "hidden_size": q.hidden_size,
            "num_layers": q.num_hidden_layers, "num_heads": q.num_attention_heads,
            "intermediate_size": q.intermediate_size, "cross_attention_freq": q.cross_attention_frequency,
            "encoder_width": q.encoder_hidden_size, "max_position_embeddings": q.max_position_embeddings,
            "layer_norm_eps": q.layer_norm_eps, "dropout": q.hidden_dropout_prob,
        },
        "lm": {"name_or_path": "./lm", "kind": kind},
    })


def convert_from_transformers(source: str, out: str | Path) -> Blip2:
    """Write a qformer folder from a transformers BLIP-2 checkpoint (hub id or folder); returns the model."""
    out = Path(out)
    try:
        hf = load_safetensors_model(Blip2ForConditionalGeneration, source, "--from-transformers", dtype=torch.float32)
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"{source}: transformers could not load it as Blip2ForConditionalGeneration ({e}); "
            "its load report, logged above, names the tensors that do not fit"
        ) from e
    # step 1: the frozen backbones, saved as they are, with the files that preprocess for them
    hf.vision_model.save_pretrained(out / "vision")
    hf.language_model.save_pretrained(out / "lm")
    AutoTokenizer.from_pretrained(source).save_pretrained(out / "lm")
    try:
        AutoImageProcessor.from_pretrained(source).save_pretrained(out / "vision")
    except (OSError, ValueError):
        log.warning("%s has no image-processor config; using BLIP-2's (224 px, bicubic, CLIP mean/std)", source)
    # step 2: the bridge, key by key
    config = config_from_transformers(hf.config)
    model = Blip2(resolve_relative_paths(config, out))
    with_text = bool(getattr(hf.config.qformer_config, "use_qformer_text_input", False))
    source_state = {k: v for k, v in hf.state_dict().items() if not k.startswith(("vision_model.", "language_model."))}
    fresh = _load_pairs(model, source_state, key_pairs(model.config.qformer, with_text), source)
    log.info("not in a transformers BLIP-2 checkpoint, so freshly initialised: %s", ", ".join(fresh))
    model.config = config  # keep ./vision and ./lm relative, so the folder can move
    model.save_pretrained(out)
    return model


def convert_to_transformers(model: Blip2, out: str | Path) -> Blip2ForConditionalGeneration:
    """Write `model` as a transformers BLIP-2 checkpoint (with its processor); returns the transformers model."""
    vision = model.vision
    if not (isinstance(vision, HFVisionEncoder) and isinstance(vision.backbone, Blip2VisionModel)):
        raise ValueError(
            f"transformers' BLIP-2 layout needs a Blip2VisionModel image encoder; this model uses "
            f"{model.config.vision.backend}:{model.config.vision.model_name}"
        )
    if model.lm is None:
        raise ValueError("transformers' BLIP-2 layout needs a language model; this model has none")
    q = model.config.qformer
    lm, tokenizer = model.lm.model, copy.deepcopy(model.lm.tokenizer)
    # step 1: a placeholder token for the image positions, as recent processors expect. A spare
    # embedding row keeps the LM exactly as it is; without one, a copy of the LM grows a row.
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_token_id >= lm.get_input_embeddings().num_embeddings:
        log.warning("no spare embedding row for %s: the exported LM gets one more token", IMAGE_TOKEN)
        lm = copy.deepcopy(lm)
        lm.resize_token_embeddings(image_token_id + 1, mean_resizing=False)
    hf_config = HFBlip2Config(
        vision_config=vision.backbone.config.to_dict(),
        qformer_config={
            "hidden_size": q.hidden_size, "num_hidden_layers": q.num_layers, "num_attention_heads": q.num_heads,
            "intermediate_size": q.intermediate_size, "cross_attention_frequency": q.cross_attention_freq,
            "encoder_hidden_size": q.encoder_width, "max_position_embeddings": q.max_position_embeddings,
            "layer_norm_eps": q.layer_norm_eps, "hidden_act": "gelu", "use_qformer_text_input": True,
        },
        text_config=lm.config.to_dict(),
        num_query_tokens=q.num_queries,
        image_token_index=image_token_id,
    )
    hf = Blip2ForConditionalGeneration(hf_config).eval()
    # step 2: every tensor, checked: the backbones as they are, the bridge through the key map
    ours = model.state_dict()
    state = {f"vision_model.{k}": v for k, v in vision.backbone.state_dict().items()}
    state.update({f"language_model.{k}": v for k, v in lm.state_dict().items()})
    for our_key, their_keys in key_pairs(q, with_text_ffn=True).items():
        for their_key, part in zip(their_keys, ours[our_key].chunk(len(their_keys))):
            state[their_key] = part
    try:
        hf.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"export does not fit Blip2ForConditionalGeneration: {e}") from e
    # step 3: weights, config and a processor that expands image tokens
    out = Path(out)
    hf.save_pretrained(out)
    pre = vision.preprocessor
    image_processor = BlipImageProcessor(
        size={"height": pre.size, "width": pre.size}, image_mean=list(pre.mean), image_std=list(pre.std),
        resample=3 if pre.interpolation == "bicubic" else 2,
    )
    Blip2Processor(image_processor, tokenizer, num_query_tokens=q.num_queries).save_pretrained(out)
    return hf


def _load_pairs(model: Blip2, source: dict[str, torch.Tensor], pairs: dict[str, list[str]], name: str) -> list[str]:
    """Copy every mapped tensor; any missing, left-over or misshapen source tensor is an error."""
    needed = {k for keys in pairs.values() for k in keys}
    missing = sorted(needed - set(source))
    leftover = sorted(set(source) - needed)
    if missing or leftover:
        raise CheckpointError(
            f"{name} does not fit qformer's BLIP-2 layout: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, not understood {leftover[:5]}{' ...' if len(leftover) > 5 else ''}"
        )
    targets = model.state_dict()
    with torch.no_grad():
        for our_key, their_keys in pairs.items():
            value = torch.cat([source[k] for k in their_keys])
            if value.shape != targets[our_key].shape:
                raise CheckpointError(
                    f"{name}: {' + '.join(their_keys)} has shape {tuple(value.shape)}, "
                    f"but qformer's {our_key} needs {tuple(targets[our_key].shape)}"
                )
            targets[our_key].copy_(value)
    skip = ("vision.", "lm.")
    return sorted(k for k in targets if k not in pairs and not k.startswith(skip))
