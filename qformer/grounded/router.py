"""Photo or drawing? The default captioner's router: the trained bridge knows the drawings it was
trained on (scenes, emoji), and the grounded captioner knows photos. A logistic regression on
EfficientNet-Lite0's pooled features decides, trained by `scripts/train_router.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from ..weights import read_state_dict

ROUTER = Path(__file__).resolve().parent / "data" / "router.safetensors"


class PhotoRouter:
    """`router(images)` -> p(photo) per image; `router.is_photo(image)` at `threshold`."""

    def __init__(self, classifier, path: str | Path = ROUTER, threshold: float = 0.5):
        state = read_state_dict(str(path))
        self.classifier, self.threshold = classifier, threshold
        self.weight, self.bias = state["weight"].float(), state["bias"].float()
        if self.weight.ndim != 1 or self.bias.shape != (1,):
            raise ValueError(f"{path}: not a router (weight {tuple(self.weight.shape)}, bias {tuple(self.bias.shape)})")

    def __call__(self, images: Sequence[Image.Image]) -> list[float]:
        features = self.classifier.pooled_features(images)
        if features.shape[-1] != self.weight.shape[0]:
            raise ValueError(f"the router expects {self.weight.shape[0]} features; {self.classifier.name} gives "
                             f"{features.shape[-1]}")
        return torch.sigmoid(features @ self.weight + self.bias).tolist()

    def is_photo(self, image: Image.Image) -> bool:
        return self([image])[0] >= self.threshold
