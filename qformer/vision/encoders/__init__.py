"""Frozen image encoders: `build_encoder(VisionConfig)` picks the backend the config names."""

from __future__ import annotations

import torch
from torch import nn

from ...config import VisionConfig
from .base import FrozenImageEncoder, Pixels, Preprocess
from .fusion import FusedEncoder


def build_encoder(config: VisionConfig) -> nn.Module:
    """A frozen encoder (or a fusion of several) with `.width`, `.preprocess(images)` and `forward(pixels)`."""
    if config.backend == "fusion":
        return FusedEncoder([build_encoder(m) for m in config.members], config.fusion_width)
    # Weights not loaded from a file come from the config's seed, without touching the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return _build_backend(config)


def _build_backend(config: VisionConfig) -> FrozenImageEncoder:
    if config.backend == "timm":
        from .timm_encoder import TimmEncoder

        return TimmEncoder(config)
    if config.backend == "open_clip":
        from .open_clip_encoder import OpenClipEncoder

        return OpenClipEncoder(config)
    from .hf_encoder import HFVisionEncoder

    return HFVisionEncoder(config)


__all__ = ["FrozenImageEncoder", "FusedEncoder", "Pixels", "Preprocess", "build_encoder"]
