"""Two detectors as one: a COCO detector's tight boxes, and activation-map regions for the animals
it cannot name.

NanoDet boxes COCO's ten animals, people and vehicles tightly, but misses butterflies, fish and
primates; the activation maps of ImageNet's animal classes find those, loosely. Fusion is
class-agnostic suppression that prefers the detector: a region is dropped where it overlaps one of
the detector's animal boxes (IoU at least `iou`), lies mostly inside one, or mostly contains one.
A region over a detector's person or vehicle is kept: the classifier decides later which it is
(a tiger cut out on white is "person" to NanoDet at 0.77).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torchvision
from PIL import Image

from .detect import Detection

Detector = Callable[[Sequence[Image.Image]], list[list[Detection]]]


class FusedDetector:
    def __init__(self, detector: Detector, regions: Detector, iou: float = 0.3, inside: float = 0.7):
        self.detector, self.regions, self.iou, self.inside = detector, regions, iou, inside
        self.name = " fused with ".join(getattr(d, "name", type(d).__name__) for d in (detector, regions))

    @property
    def min_conf(self) -> float | None:
        return getattr(self.detector, "min_conf", None)

    def __call__(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        return [fuse(boxes, regions, self.iou, self.inside)
                for boxes, regions in zip(self.detector(images), self.regions(images))]


def fuse(boxes: list[Detection], regions: list[Detection], iou: float = 0.3, inside: float = 0.7) -> list[Detection]:
    """`boxes` (the detector's, all kept) and the `regions` that add an animal the boxes do not cover."""
    animals = [d for d in boxes if d.category == "animal"]
    if not animals or not regions:
        return [*boxes, *regions]
    kept_boxes = _corners(animals)
    added = []
    for region, corners in zip(regions, _corners(regions)):
        overlap = torchvision.ops.box_iou(corners[None], kept_boxes)[0]
        covered = _intersection(corners[None], kept_boxes)[0]
        region_area, box_areas = _area(corners), _area(kept_boxes)
        if (overlap >= iou).any() or (covered >= inside * region_area).any() or (covered >= inside * box_areas).any():
            continue
        added.append(region)
    return [*boxes, *added]


def _corners(detections: list[Detection]) -> torch.Tensor:
    return torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d.box for d in detections)], dtype=torch.float32)


def _area(corners: torch.Tensor) -> torch.Tensor:
    return (corners[..., 2] - corners[..., 0]).clamp_min(0) * (corners[..., 3] - corners[..., 1]).clamp_min(0)


def _intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(len(a), len(b)) areas of overlap."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    return (bottom_right - top_left).clamp_min(0).prod(-1)
