"""The one interface every frozen image encoder has: images in, `(B, N, D)` tokens out."""

from __future__ import annotations

from typing import Sequence, Union

import torch
from PIL import Image

from ...config import ConfigError, VisionConfig
from ...pretrained.frozen import Frozen
from ...processing.preprocess import Preprocess

Pixels = Union[torch.Tensor, tuple[torch.Tensor, ...]]  # a tuple for fused encoders, one per member

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class FrozenImageEncoder(Frozen):
    """Base class: a pretrained backbone that never trains.

    Subclasses build `self.backbone`, set `self.width` and `self.preprocessor`, and implement
    `forward_tokens`. The frozen contract: no parameter requires grad, eval mode survives the
    parent's `.train()`, and no autograd graph is built.
    """

    width: int
    preprocessor: Preprocess

    def __init__(self, dtype: str = "float32"):
        super().__init__()
        self.dtype = DTYPES[dtype]

    def freeze(self) -> FrozenImageEncoder:
        self.to(self.dtype)
        return super().freeze()

    def preprocess(self, images: Sequence[Image.Image]) -> Pixels:
        return self.preprocessor(images)

    def forward_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, pixels: Pixels) -> torch.Tensor:
        if not isinstance(pixels, torch.Tensor):
            raise TypeError(f"{type(self).__name__} takes one pixel tensor (B, 3, H, W), got {type(pixels).__name__}")
        return self.forward_tokens(pixels.to(self.dtype)).float()  # (B, N, width)


def merge_preprocess(default: Preprocess, config: VisionConfig) -> Preprocess:
    """The backbone's own preprocessing, with any values the user set in the config on top."""
    return Preprocess(
        size=config.image_size or default.size,
        mean=config.mean or default.mean,
        std=config.std or default.std,
        interpolation=config.interpolation or default.interpolation,
        crop_pct=default.crop_pct,
        resize_with=default.resize_with,
    )


def allowed_kwargs(kwargs: dict, allowed: frozenset[str], backend: str) -> dict:
    """`kwargs` if every key is an architecture setting the backend takes, else a ConfigError naming it."""
    refused = sorted(set(kwargs) - allowed)
    if refused:
        raise ConfigError(f"vision.model_kwargs: {refused} not accepted for the {backend} backend; "
                          f"it takes architecture settings only: {sorted(allowed)}")
    return dict(kwargs)
