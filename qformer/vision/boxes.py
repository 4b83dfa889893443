"""Detections, the detector contract, and box geometry, in one place (numpy only: no torch).

Boxes travel as MegaDetector writes them, x, y, width, height as fractions of the image; geometry is
computed on corners (x1, y1, x2, y2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
from PIL import Image

from ..processing.images import REDUCING_GAP

CATEGORIES = ("animal", "person", "vehicle")  # MegaDetector's "1", "2", "3", in this order
CROP_SIDE = 512  # crops are kept at most this size: more than any ImageNet classifier's input


@dataclass
class Detection:
    box: tuple[float, float, float, float]  # x, y, width, height, as fractions of the image (MegaDetector's bbox)
    conf: float
    category: str  # one of CATEGORIES
    label: str | None = None  # the detector's own class name, when it has one (a COCO detector's "dog")
    from_maps: bool = False  # a region of a classifier's activation maps, not a detector's box

    def crop(self, image: Image.Image, margin: float = 0.15, side: int = CROP_SIDE) -> Image.Image:
        """What a classifier sees of this detection: the box widened by `margin` of its size on every
        side, then to a square around its centre (a classifier names an animal better with some of its
        surroundings than cut at its outline), kept within the image and scaled to at most `side`."""
        width, height = image.size
        x, y, w, h = self.box
        half = max(w * width, h * height) * (1 + 2 * margin) / 2
        cx, cy = (x + w / 2) * width, (y + h / 2) * height
        left, top = max(0, int(cx - half)), max(0, int(cy - half))
        right = min(width, max(left + 1, int(cx + half)))
        bottom = min(height, max(top + 1, int(cy + half)))
        crop = image.crop((left, top, right, bottom))
        crop.thumbnail((side, side), Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP)
        return crop


class Detector(Protocol):
    """What the wildlife pipeline asks of a detector: per image, its detections. `name` goes into the
    results file, and `min_conf` too, as the detection threshold it recommends to the file's readers
    (MegaDetector's `typical_detection_threshold`; None when it has none)."""

    name: str
    min_conf: float | None

    def __call__(self, images: Sequence[Image.Image]) -> list[list[Detection]]: ...


def xywh(corners: Sequence[float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = corners
    return (round(x1, 4), round(y1, 4), round(x2 - x1, 4), round(y2 - y1, 4))


def corners(detections: Sequence[Detection]) -> np.ndarray:
    """(N, 4) x1, y1, x2, y2."""
    rows = [[x, y, x + w, y + h] for x, y, w, h in (d.box for d in detections)]
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]).clip(min=0) * (boxes[..., 3] - boxes[..., 1]).clip(min=0)


def intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) areas of overlap."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    return (bottom_right - top_left).clip(min=0).prod(-1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union."""
    overlap = intersection(a, b)
    return overlap / np.maximum(area(a)[:, None] + area(b)[None, :] - overlap, 1e-12)


def inside_fraction(box: Sequence[float], other: Sequence[float]) -> float:
    """The fraction of `box`'s area (corners) that lies inside `other`."""
    a, b = np.asarray([box], dtype=np.float64), np.asarray([other], dtype=np.float64)
    return float(intersection(a, b)[0, 0] / max(float(area(a)[0]), 1e-9))


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, groups: np.ndarray | None = None) -> list[int]:
    """Greedy non-maximum suppression of (N, 4) corner boxes, as torchvision's `nms` and
    `batched_nms` do it: the indices kept, best score first; a box goes when it overlaps a kept one
    of its group (all one group without `groups`) by an IoU above `threshold`."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    boxes = np.asarray(boxes, dtype=np.float64)
    groups = np.zeros(len(boxes), np.int64) if groups is None else np.asarray(groups)
    kept: list[int] = []
    suppressed = np.zeros(len(boxes), bool)
    for i in order:
        if suppressed[i]:
            continue
        kept.append(int(i))
        overlap = iou(boxes[i : i + 1], boxes)[0]
        suppressed |= (overlap > threshold) & (groups == groups[i])
    return kept
