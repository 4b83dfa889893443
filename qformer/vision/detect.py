"""Adapters for real detectors, when you have their weights: MegaDetector (YOLO weights) and
torchvision's COCO detectors; boxes with a category (animal, person, vehicle) and a confidence. The
offline default's detectors are NanoDet (`nanodet.py`) and the activation maps (`cam.py`)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torchvision
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor, to_dtype

from .boxes import CATEGORIES, Detection, xywh
from .cam import CamDetector  # noqa: F401 (importable from here, as before)

COCO_ANIMALS = set(range(16, 26))  # bird, cat, dog, horse, sheep, cow, elephant, bear, zebra, giraffe
COCO_PERSON = {1}
COCO_VEHICLES = set(range(2, 10))  # bicycle, car, motorcycle, airplane, bus, train, truck, boat


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
