"""Turning images into an encoder's input, the way the encoder was trained: one definition, used by
the torch models and by the torch-free runtime of exported folders (`qformer.deploy.lite`).

Resizing goes through PIL when the encoder's own transforms did (timm, open_clip); transformers'
image processors resample uint8 tensors with torchvision instead, which differs in the last bit, so
that way needs torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from .images import crop_to_aspect

# torchvision's names for PIL's filters, as timm and open_clip configs spell them
PIL_FILTERS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
               "bicubic": Image.Resampling.BICUBIC, "box": Image.Resampling.BOX,
               "hamming": Image.Resampling.HAMMING, "lanczos": Image.Resampling.LANCZOS}


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

    def __call__(self, images: Sequence[Image.Image]):
        """`(B, 3, size, size)` float32 torch tensor."""
        import torch

        if self.resize_with == "pil":
            return torch.from_numpy(self.arrays(images))
        return torch.stack([self._torchvision(image) for image in images])

    def arrays(self, images: Sequence[Image.Image]) -> np.ndarray:
        """`(B, 3, size, size)` float32 numpy array, without torch (PIL resampling only)."""
        if self.resize_with != "pil":
            raise ValueError("this encoder's images are resampled by torchvision (a transformers image processor), "
                             "which needs torch; load the model with qformer.create_model")
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return np.stack([(self._resized(image) * np.float32(1 / 255) - mean) / std for image in images])

    def _resized(self, image: Image.Image) -> np.ndarray:
        """The resized (and cropped) image as `(3, size, size)` float32 values 0..255, as torchvision
        resizes and crops a PIL image."""
        resample = PIL_FILTERS[self.interpolation]
        if self.crop_pct is None:
            if image.size != (self.size, self.size):
                image = image.resize((self.size, self.size), resample=resample)
        else:
            image = crop_to_aspect(image)  # the centre crop below would drop the rest anyway
            short = int(self.size / self.crop_pct)
            width, height = image.size
            # the short side to `short`, the long one in proportion, rounded down
            size = (short, int(short * height / width)) if width <= height else (int(short * width / height), short)
            if size != image.size:
                image = image.resize(size, resample=resample)
            # the centre; a side shorter than the crop is padded with black, the odd pixel after it
            left, top = (round((side - self.size) / 2) if side >= self.size else -((self.size - side) // 2)
                         for side in size)
            image = image.crop((left, top, left + self.size, top + self.size))
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)

    def _torchvision(self, image: Image.Image):
        import torch
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        mode = InterpolationMode(self.interpolation)
        if self.crop_pct is None:
            x = TF.resize(TF.pil_to_tensor(image), [self.size, self.size], interpolation=mode, antialias=True)
        else:
            x = TF.pil_to_tensor(crop_to_aspect(image))
            x = TF.center_crop(TF.resize(x, int(self.size / self.crop_pct), interpolation=mode, antialias=True),
                               [self.size, self.size])
        return TF.normalize(TF.to_dtype(x, torch.float32, scale=True), list(self.mean), list(self.std))
