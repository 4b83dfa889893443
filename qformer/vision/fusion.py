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

from typing import Sequence

from PIL import Image

from .boxes import Detection, Detector, area, corners, intersection
from .boxes import iou as box_iou


class FusedDetector:
    def __init__(self, detector: Detector, regions: Detector, iou: float = 0.3, inside: float = 0.7):
        self.detector, self.regions, self.iou, self.inside = detector, regions, iou, inside
        self.name = f"{detector.name} fused with {regions.name}"

    @property
    def min_conf(self) -> float | None:
        return self.detector.min_conf

    def __call__(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        return [fuse(boxes, regions, self.iou, self.inside)
                for boxes, regions in zip(self.detector(images), self.regions(images))]


def fuse(boxes: list[Detection], regions: list[Detection], iou: float = 0.3, inside: float = 0.7) -> list[Detection]:
    """`boxes` (the detector's, all kept) and the `regions` that add an animal the boxes do not cover."""
    animals = [d for d in boxes if d.category == "animal"]
    if not animals or not regions:
        return [*boxes, *regions]
    kept_boxes = corners(animals)
    added = []
    for region, box in zip(regions, corners(regions)):
        overlap = box_iou(box[None], kept_boxes)[0]
        covered = intersection(box[None], kept_boxes)[0]
        covers_or_covered = (covered >= inside * area(box)).any() or (covered >= inside * area(kept_boxes)).any()
        if (overlap >= iou).any() or covers_or_covered:
            continue
        added.append(region)
    return [*boxes, *added]
