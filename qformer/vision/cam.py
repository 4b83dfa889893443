"""Animals found by a classifier's class-activation maps, on either engine (numpy only).

No animal detector ships on any package index, so the offline default finds animals with the
classifier it already has: class-activation maps of the ImageNet animal classes, split into
connected regions, with the whole image as the fallback.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from ..processing.images import REDUCING_GAP, network_size
from .boxes import Detection, inside_fraction, nms, xywh
from .classifiers import Classifier
from .knowledge import Knowledge


class CamDetector:
    """Animal regions from a classifier's class-activation maps. The classifier is convolutional, so it
    sees the whole image at its own aspect ratio (short side `size`): animals anywhere in the frame,
    several of them, get their own peaks. An image whose animal classes together score below
    `min_animal` has no detections; otherwise regions cover the cells at least `threshold` of the
    peak, and overlapping or nested regions are merged. A flat map gives the whole image as the box."""

    def __init__(self, classifier: Classifier, knowledge: Knowledge, min_animal: float = 0.3,
                 threshold: float = 0.4, size: int | None = None, min_area: float = 0.02, iou: float = 0.3):
        self.classifier, self.min_animal, self.threshold = classifier, min_animal, threshold
        self.min_area, self.iou = min_area, iou
        self.size = size or classifier.preprocess.size
        self.animal_classes = [c["index"] for c in knowledge.classes if c["group"]]
        self.name = f"activation maps of {classifier.name}"
        self.min_conf = min_animal  # the strongest region of a photo scores its whole animal probability

    def __call__(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        return [self._detect(image) for image in images]

    def _detect(self, image: Image.Image) -> list[Detection]:
        shape = network_size(*image.size, self.size)  # a panorama is squashed, never 448000 pixels long
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        resized = np.asarray(rgb.resize(shape, Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP), np.float32) / 255
        preprocess = self.classifier.preprocess
        pixels = ((resized - np.float32(preprocess.mean)) / np.float32(preprocess.std)).transpose(2, 0, 1)[None]
        probs, maps = self.classifier.activation_maps(pixels, self.animal_classes)
        animal = float(probs[0, self.animal_classes].sum())
        if animal < self.min_animal:
            return []
        cam = maps[0]
        cam = upsampled(cam, 4)
        peak = cam.max()
        if peak <= 0:
            return [Detection((0.0, 0.0, 1.0, 1.0), animal, "animal", from_maps=True)]
        rows_n, cols_n = cam.shape
        boxes, scores = [], []
        for cells in _components(cam >= self.threshold * peak):
            rows, cols = zip(*cells)
            box = [min(cols) / cols_n, min(rows) / rows_n, (max(cols) + 1) / cols_n, (max(rows) + 1) / rows_n]
            if (box[2] - box[0]) * (box[3] - box[1]) >= self.min_area:
                boxes.append(box)
                scores.append(animal * float(max(cam[r, c] for r, c in cells) / peak))
        return _merge(boxes, scores, self.iou) or [Detection((0.0, 0.0, 1.0, 1.0), animal, "animal", from_maps=True)]


def _merge(boxes: list[list[float]], scores: list[float], iou: float) -> list[Detection]:
    if not boxes:
        return []
    kept: list[int] = []
    for i in nms(np.asarray(boxes, np.float32), np.asarray(scores, np.float32), iou):
        if all(inside_fraction(boxes[i], boxes[j]) < 0.7 for j in kept):
            kept.append(i)
    return [Detection(xywh(np.float32(boxes[i]).tolist()), float(np.float32(scores[i])), "animal", from_maps=True)
            for i in kept]


def upsampled(grid: np.ndarray, factor: int) -> np.ndarray:
    """`grid` (H, W) resized `factor` times by bilinear interpolation, pixel centres aligned (as
    torch's `interpolate(mode="bilinear", align_corners=False)`)."""
    def weights(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        source = np.maximum((np.arange(n * factor) + 0.5) / factor - 0.5, 0)
        low = np.minimum(np.floor(source).astype(np.int64), n - 1)
        return low, np.minimum(low + 1, n - 1), (source - low).astype(np.float32)

    (top, bottom, dy), (left, right, dx) = weights(grid.shape[0]), weights(grid.shape[1])
    rows = grid[top] * (1 - dy)[:, None] + grid[bottom] * dy[:, None]
    return rows[:, left] * (1 - dx) + rows[:, right] * dx


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """4-connected regions of a small boolean grid."""
    rows, cols = mask.shape
    seen = np.zeros_like(mask)
    regions = []
    for r0 in range(rows):
        for c0 in range(cols):
            if not mask[r0, c0] or seen[r0, c0]:
                continue
            stack, cells = [(r0, c0)], []
            seen[r0, c0] = True
            while stack:
                r, c = stack.pop()
                cells.append((r, c))
                for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                    if 0 <= rr < rows and 0 <= cc < cols and mask[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        stack.append((rr, cc))
            regions.append(cells)
    return regions
