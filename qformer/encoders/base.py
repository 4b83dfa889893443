"""The one interface every frozen image encoder has: images in, `(B, N, D)` tokens out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..config import ConfigError, VisionConfig
from ..frozen import Frozen
from ..images import crop_to_aspect

Pixels = Union[torch.Tensor, tuple[torch.Tensor, ...]]  # a tuple for fused encoders, one per member

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocess:
    """Resize (and optionally centre-crop) and normalise, the way the encoder was trained.

    `crop_pct=None` squashes the image to `size x size` (BLIP-2's processor does this);
    otherwise the short side goes to `size / crop_pct` and the centre `size x size` is kept (timm).
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float | None = None
    # Who resamples: PIL (timm's and open_clip's transforms) or torchvision on uint8 tensors
    # (transformers' image processors). They differ in the last bit, and parity needs the owner's way.
    resize_with: str = "pil"

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        mode = InterpolationMode(self.interpolation)
        batch = []
        for image in images:
            if self.crop_pct is not None:  # the centre crop below would drop the rest anyway
                image = crop_to_aspect(image)
            x = image if self.resize_with == "pil" else TF.pil_to_tensor(image)
            if self.crop_pct is None:
                x = TF.resize(x, [self.size, self.size], interpolation=mode, antialias=True)
            else:
                x = TF.resize(x, int(self.size / self.crop_pct), interpolation=mode, antialias=True)
                x = TF.center_crop(x, [self.size, self.size])
            x = TF.pil_to_tensor(x) if self.resize_with == "pil" else x  # (3, size, size) uint8
            batch.append(TF.normalize(TF.to_dtype(x, torch.float32, scale=True), list(self.mean), list(self.std)))
        return torch.stack(batch)  # (B, 3, size, size)


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
