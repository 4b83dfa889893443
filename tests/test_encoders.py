"""Every backend, built tiny and random: tokens come out as (B, N, D), and frozen stays frozen."""

import pytest
import torch

from qformer.config import VisionConfig
from qformer.vision.encoders import build_encoder

TINY_VIT = {"patch_size": 8, "depth": 2, "num_heads": 2, "embed_dim": 32}
HF_TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
           "image_size": 32, "patch_size": 8}

BACKENDS = {
    "timm-vit": (VisionConfig(backend="timm", model_name="vit_tiny_patch16_224", image_size=32,
                              model_kwargs=TINY_VIT), 17, 32),
    "timm-cnn": (VisionConfig(backend="timm", model_name="resnet10t", image_size=64), 4, 512),
    "open_clip": (VisionConfig(backend="open_clip", model_name="ViT-B-32", model_kwargs={
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}), 16, 32),
    "hf-clip": (VisionConfig(backend="transformers", model_name="CLIPVisionModel", model_kwargs=HF_TINY), 17, 32),
    "hf-siglip": (VisionConfig(backend="transformers", model_name="SiglipVisionModel", model_kwargs=HF_TINY), 16, 32),
    "hf-dinov2": (VisionConfig(backend="transformers", model_name="Dinov2Model", model_kwargs={
        **{k: v for k, v in HF_TINY.items() if k != "intermediate_size"}, "mlp_ratio": 2}), 17, 32),
    "hf-blip2": (VisionConfig(backend="transformers", model_name="Blip2VisionModel", model_kwargs=HF_TINY), 17, 32),
}


@pytest.mark.parametrize("name", BACKENDS)
def test_tokens_and_frozen_contract(name, cat, astronaut):
    config, num_tokens, width = BACKENDS[name]
    encoder = build_encoder(config)
    pixels = encoder.preprocess([cat, astronaut])
    size = encoder.preprocessor.size
    assert pixels.shape == (2, 3, size, size)
    tokens = encoder(pixels)
    assert tokens.shape == (2, num_tokens, width) and encoder.width == width
    assert tokens.dtype == torch.float32
    assert not tokens.requires_grad, "a frozen encoder must not build an autograd graph"
    assert not any(p.requires_grad for p in encoder.parameters())
    parent = torch.nn.Sequential(encoder)
    parent.train()
    assert not encoder.training and not any(m.training for m in encoder.modules())


def test_dtype_is_configurable(cat):
    config = VisionConfig(backend="timm", model_name="vit_tiny_patch16_224", image_size=32,
                          model_kwargs=TINY_VIT, dtype="bfloat16")
    encoder = build_encoder(config)
    assert all(p.dtype == torch.bfloat16 for p in encoder.parameters())
    assert encoder(encoder.preprocess([cat])).dtype == torch.float32  # the bridge gets float32 tokens


def test_preprocessing_follows_config(cat):
    config = VisionConfig(backend="timm", model_name="vit_tiny_patch16_224", image_size=32,
                          model_kwargs=TINY_VIT, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    pixels = build_encoder(config).preprocess([cat])
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0


def test_fusion_projects_and_concatenates(cat):
    timm_config, _, _ = BACKENDS["timm-vit"]
    hf_config, _, _ = BACKENDS["hf-siglip"]
    fused = build_encoder(VisionConfig(backend="fusion", members=[timm_config, hf_config], fusion_width=24))
    tokens = fused(fused.preprocess([cat]))
    assert tokens.shape == (1, 17 + 16, 24)
    trainable = {n for n, p in fused.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("projections.") for n in trainable)
    assert tokens.requires_grad, "the fusion projections train, so they need a graph"


def test_unsupported_choices_are_explained():
    with pytest.raises(ValueError, match="supports"):
        build_encoder(VisionConfig(backend="transformers", model_name="BertModel"))
    with pytest.raises(ValueError, match="needs at least 2 vision.members"):
        VisionConfig(backend="fusion", members=[], fusion_width=8)
