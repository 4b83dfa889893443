"""Photo or drawing? The default captioner's router: the trained bridge knows the drawings it was
trained on (scenes, emoji), and the grounded captioner knows photos. A logistic regression on
EfficientNet-Lite0's pooled features decides, trained by `scripts/train_router.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..vision.classifiers import to_numpy

ROUTER = Path(__file__).resolve().parent / "data" / "router.safetensors"


class PhotoRouter:
    """`router(images)` -> p(photo) per image; `router.is_photo(image)` at `threshold`."""

    def __init__(self, classifier, path: str | Path = ROUTER, threshold: float = 0.5):
        state = _read(path)
        self.classifier, self.threshold = classifier, threshold
        self.weight, self.bias = state.get("weight"), state.get("bias")
        if self.weight is None or self.bias is None or self.weight.ndim != 1 or self.bias.shape != (1,):
            raise ValueError(f"{path}: not a router (it needs a 1-D weight and a bias of one value)")
        self.weight, self.bias = self.weight.astype(np.float32), self.bias.astype(np.float32)
        trained_on = _metadata(path).get("features")
        if trained_on is not None and trained_on != classifier.name:
            # the same width, other numbers: it would route every image by chance
            raise ValueError(f"{path}: this router was trained on {trained_on} features, not {classifier.name}'s; "
                             "retrain it with scripts/train_router.py")

    def __call__(self, images: Sequence[Image.Image]) -> list[float]:
        features = to_numpy(self.classifier.pooled_features(images))
        if features.shape[-1] != self.weight.shape[0]:
            raise ValueError(f"the router expects {self.weight.shape[0]} features; {self.classifier.name} gives "
                             f"{features.shape[-1]}")
        return (1 / (1 + np.exp(-(features @ self.weight + self.bias)))).tolist()

    def is_photo(self, image: Image.Image) -> bool:
        return self([image])[0] >= self.threshold

    def path(self, p_photo: float, plain: str | None = None) -> str:
        """"grounded" for a photo, and for a picture of one flat colour (`colour.plain_colour`), which has
        nothing in it to name while the bridge, trained on drawings of shapes, would invent some;
        "bridge" for a drawing."""
        return "grounded" if plain or p_photo >= self.threshold else "bridge"


def _read(path: str | Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e}); reinstall qformer") from e


def _metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return f.metadata() or {}
