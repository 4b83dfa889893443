"""Detectors: boxes with a category (animal, person, vehicle) and a confidence, per image.

No animal detector ships on any package index, so the offline default finds animals with the
classifier it already has: class-activation maps of the ImageNet animal classes, split into
connected regions, with the whole image as the fallback. Adapters take real detectors when you
have their weights: MegaDetector (YOLO weights) and torchvision's COCO detectors.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torchvision
from PIL import Image
from torchvision.transforms.v2.functional import normalize, pil_to_tensor, to_dtype

from ..processing.images import network_size
from .boxes import CATEGORIES, Detection, inside_fraction, xywh
from .classifiers import ImageNetClassifier
from .knowledge import Knowledge

COCO_ANIMALS = set(range(16, 26))  # bird, cat, dog, horse, sheep, cow, elephant, bear, zebra, giraffe
COCO_PERSON = {1}
COCO_VEHICLES = set(range(2, 10))  # bicycle, car, motorcycle, airplane, bus, train, truck, boat


class CamDetector:
    """Animal regions from a classifier's class-activation maps. The classifier is convolutional, so it
    sees the whole image at its own aspect ratio (short side `size`): animals anywhere in the frame,
    several of them, get their own peaks. An image whose animal classes together score below
    `min_animal` has no detections; otherwise regions cover the cells at least `threshold` of the
    peak, and overlapping or nested regions are merged. A flat map gives the whole image as the box."""

    def __init__(self, classifier: ImageNetClassifier, knowledge: Knowledge, min_animal: float = 0.3,
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
        pixels = to_dtype(pil_to_tensor(image.convert("RGB").resize(shape, Image.Resampling.BICUBIC)),
                          torch.float32, scale=True)
        pixels = normalize(pixels, list(self.classifier.preprocess.mean), list(self.classifier.preprocess.std))
        probs, maps = self.classifier.activation_maps(pixels[None], self.animal_classes)
        animal = float(probs[0, self.animal_classes].sum())
        if animal < self.min_animal:
            return []
        cam = maps[0]
        cam = torch.nn.functional.interpolate(cam[None, None], scale_factor=4, mode="bilinear")[0, 0]
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
    boxes_t, scores_t = torch.tensor(boxes), torch.tensor(scores)
    kept: list[int] = []
    for i in torchvision.ops.nms(boxes_t, scores_t, iou).tolist():
        if all(inside_fraction(boxes[i], boxes[j]) < 0.7 for j in kept):
            kept.append(i)
    return [Detection(xywh(boxes_t[i].tolist()), float(scores_t[i]), "animal", from_maps=True) for i in kept]


class TorchvisionDetector:
    """A torchvision COCO detector (e.g. fasterrcnn_mobilenet_v3_large_fpn); its animal, person and
    vehicle classes map onto MegaDetector's categories, and the rest are dropped."""

    def __init__(self, model: torch.nn.Module, min_conf: float = 0.3):
        self.model, self.min_conf = model.eval(), min_conf
        self.name = f"torchvision {type(model).__name__}"

    @classmethod
    def from_name(cls, name: str = "fasterrcnn_mobilenet_v3_large_fpn", weights: str | None = "DEFAULT",
                  **kwargs) -> TorchvisionDetector:
        """`weights="DEFAULT"` downloads COCO weights (online); None builds random weights."""
        model = torchvision.models.get_model(name, weights=weights, weights_backbone=None)
        return cls(model, **kwargs)

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        device = next(self.model.parameters()).device
        tensors = [to_dtype(pil_to_tensor(i.convert("RGB")), torch.float32, scale=True).to(device) for i in images]
        outputs = self.model(tensors)
        return [_from_boxes(o["boxes"].cpu(), o["scores"].cpu(), [_coco_category(int(k)) for k in o["labels"]],
                            image.size, self.min_conf) for o, image in zip(outputs, images)]


class MegaDetector:
    """MegaDetector or any YOLO-style model whose classes are 0 animal, 1 person, 2 vehicle.
    `model(images)` returns per image an (N, 6) tensor: x1, y1, x2, y2 in pixels, conf, class."""

    def __init__(self, model: Callable[[Sequence[Image.Image]], Sequence[torch.Tensor]], min_conf: float = 0.2):
        self.model, self.min_conf = model, min_conf
        self.name = "MegaDetector (YOLO)"

    @classmethod
    def from_weights(cls, path: str, min_conf: float = 0.2, device: str | None = None) -> MegaDetector:
        """MegaDetector weights in ultralytics format (MDv5 as YOLOv5u, MDv6 and later), or any
        ultralytics YOLO detector trained on those three classes."""
        try:
            from ultralytics import YOLO
        except ImportError as e:
            raise ImportError("MegaDetector weights need ultralytics: pip install ultralytics") from e
        yolo = YOLO(path)

        def predict(images: Sequence[Image.Image]) -> list[torch.Tensor]:
            # three channels: grey or RGBA photos would not fit the network's first layer
            results = yolo.predict([i.convert("RGB") for i in images], conf=min_conf, device=device, verbose=False)
            return [r.boxes.data.cpu() for r in results]

        return cls(predict, min_conf=min_conf)

    def __call__(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        found = []
        for rows, image in zip(self.model(images), images):
            rows = torch.as_tensor(rows, dtype=torch.float32).detach().reshape(-1, 6)
            categories = [CATEGORIES[int(k)] if 0 <= int(k) < 3 else None for k in rows[:, 5]]
            found.append(_from_boxes(rows[:, :4], rows[:, 4], categories, image.size, self.min_conf))
        return found


def _coco_category(label: int) -> str | None:
    if label in COCO_ANIMALS:
        return "animal"
    if label in COCO_PERSON:
        return "person"
    return "vehicle" if label in COCO_VEHICLES else None


def _from_boxes(boxes: torch.Tensor, scores: torch.Tensor, categories: list[str | None],
                size: tuple[int, int], min_conf: float) -> list[Detection]:
    width, height = size
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    detections = []
    for box, score, category in zip(boxes, scores, categories):
        if category is not None and float(score) >= min_conf:
            x1, y1, x2, y2 = (box.float() / scale).clamp(0, 1).tolist()
            detections.append(Detection(xywh([x1, y1, x2, y2]), float(score), category))
    return detections


def _components(mask: torch.Tensor) -> list[list[tuple[int, int]]]:
    """4-connected regions of a small boolean grid."""
    rows, cols = mask.shape
    seen = torch.zeros_like(mask)
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
