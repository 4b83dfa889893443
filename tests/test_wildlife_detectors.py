"""Detector adapters of the wildlife pipeline: MegaDetector (YOLO weights) and torchvision's COCO
detectors, with random weights and stand-in models; their classes mapped onto MegaDetector's categories."""


import pytest
import torch

from qformer.processing.images import ImageLoadError, load_image
from qformer.wildlife import Knowledge, MegaDetector, TorchvisionDetector, WildlifePipeline


class RandomYolo(torch.nn.Module):
    """A stand-in for MegaDetector with random weights: YOLO-style rows (x1, y1, x2, y2, conf, class)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = torch.nn.Linear(3, 6 * 4)

    def forward(self, images):
        rows = []
        for image in images:
            raw = self.head(torch.tensor(image.resize((1, 1)).getpixel((0, 0)), dtype=torch.float32) / 255).view(4, 6)
            width, height = image.size
            x1, y1 = raw[:, 0].sigmoid() * width / 2, raw[:, 1].sigmoid() * height / 2
            boxes = torch.stack([x1, y1, x1 + width / 3, y1 + height / 3], -1)
            rows.append(torch.cat([boxes, torch.full((4, 1), 0.9), torch.tensor([[0.0], [1.0], [2.0], [7.0]])], -1))
        return rows


def test_megadetector_adapter_reports_people_and_vehicles_as_such(cat):
    knowledge = Knowledge.default()
    default = WildlifePipeline.default()
    pipeline = WildlifePipeline(MegaDetector(RandomYolo()), default.coarse, default.experts, knowledge)
    (result,) = pipeline([cat])
    assert [a.category for a in result.animals] == ["animal", "person", "vehicle"]  # class 7 is no MD class
    animal, person, vehicle = result.animals
    assert animal.prediction_source in ("expert", "rollup", "coarse") and animal.group is not None
    assert person.name is None and person.prediction_source == "detector" and vehicle.name is None
    assert all(0 <= v <= 1 for a in result.animals for v in a.box)


def test_megadetector_weights_file_with_random_weights(cat, tmp_path):
    """A real ultralytics weights file (YOLOv9-t, MegaDetector's three classes, random weights)."""
    import ultralytics  # the dev extra installs it
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    yolo = ultralytics.YOLO("yolov9t.yaml")  # built from its config: no download
    yolo.model = DetectionModel("yolov9t.yaml", nc=3, verbose=False)
    yolo.model.names = {0: "animal", 1: "person", 2: "vehicle"}
    yolo.save(tmp_path / "md-random.pt")
    detector = MegaDetector.from_weights(str(tmp_path / "md-random.pt"), min_conf=0.0)
    found = detector([cat, cat.convert("L").resize((200, 150))])  # grey photos work too
    assert len(found) == 2 and all(found), "at confidence 0 a random detector boxes something"
    for detections in found:
        assert all(d.category in ("animal", "person", "vehicle") for d in detections)
        assert all(0 <= v <= 1 for d in detections for v in d.box) and all(0 <= d.conf <= 1 for d in detections)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    with pytest.raises(ImageLoadError):  # not ultralytics' patched Image.open, which fails offline
        load_image(str(broken))


def test_torchvision_detector_adapter_with_random_weights(cat):
    torch.manual_seed(0)
    detector = TorchvisionDetector.from_name("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None, min_conf=0.0)
    classes = detector.model.roi_heads.box_predictor.cls_score
    with torch.no_grad():  # random boxes, every one of them a COCO dog (18) or person (1)
        classes.weight.zero_()
        classes.bias.fill_(-10.0)
        classes.bias[18], classes.bias[1] = 5.0, 4.0
    (detections,) = detector([cat.resize((160, 120))])
    assert detections and {d.category for d in detections} <= {"animal", "person"}
    assert any(d.category == "animal" for d in detections)
    assert all(0 <= v <= 1 for d in detections for v in d.box)


def test_torchvision_detector_maps_coco_classes_onto_megadetector_categories(cat):
    class FixedCoco(torch.nn.Module):
        """A stand-in for a COCO detector that sees a dog, a person, a car, a bottle and a faint horse."""

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, images):
            boxes = torch.tensor([[0, 0, 80, 60], [80, 0, 160, 120], [10, 10, 20, 20], [0, 0, 5, 5], [0, 0, 9, 9]])
            return [{"boxes": boxes.float(), "labels": torch.tensor([18, 1, 3, 44, 19]),
                     "scores": torch.tensor([0.9, 0.8, 0.7, 0.95, 0.1])} for _ in images]

    (detections,) = TorchvisionDetector(FixedCoco(), min_conf=0.3)([cat.resize((160, 120))])
    assert [d.category for d in detections] == ["animal", "person",
                                                "vehicle"], "the bottle is dropped, the horse too faint"
    assert detections[0].box == (0.0, 0.0, 0.5, 0.5) and detections[1].box == (0.5, 0.0, 0.5, 1.0)
