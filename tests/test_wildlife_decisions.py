"""How the wildlife pipeline decides: detector fusion, crops with context, people against animals,
thresholds, and one classifier pass per crop. Real EfficientNet-Lite and NanoDet weights, real photos."""

import numpy as np
import pytest
import torch
from PIL import Image

from qformer.processing.images import letterbox
from qformer.vision.fusion import fuse
from qformer.wildlife import Detection, Thresholds, WildlifePipeline


@pytest.fixture(scope="module")
def pipeline():
    return WildlifePipeline.default()


def variant(pipeline: WildlifePipeline, detector=None, **thresholds) -> WildlifePipeline:
    """The same models with another detector or thresholds."""
    return WildlifePipeline(detector or pipeline.detector, pipeline.coarse, pipeline.experts, pipeline.knowledge,
                            strong_coarse=pipeline.strong_coarse, thresholds=Thresholds(**thresholds))


def fixed(*detections: Detection):
    return lambda images: [list(detections) for _ in images]


def test_fusion_prefers_the_detector_and_adds_regions_it_missed():
    dog = Detection((0.1, 0.1, 0.3, 0.3), 0.8, "animal", label="dog")
    person = Detection((0.5, 0.0, 0.5, 1.0), 0.9, "person", label="person")
    same_dog = Detection((0.12, 0.08, 0.3, 0.33), 0.6, "animal")  # the region over the detector's dog
    around = Detection((0.0, 0.0, 0.45, 0.45), 0.6, "animal")  # a loose region holding the dog
    butterfly = Detection((0.1, 0.7, 0.2, 0.2), 0.5, "animal")  # nothing of the detector's there
    over_person = Detection((0.6, 0.2, 0.3, 0.5), 0.5, "animal")  # left for the classifier to decide
    fused = fuse([dog, person], [same_dog, around, butterfly, over_person])
    assert fused == [dog, person, butterfly, over_person]
    assert fuse([], [butterfly]) == [butterfly] and fuse([person], []) == [person]


def test_person_and_animal_in_one_photo_are_both_reported(pipeline, cat, astronaut):
    canvas = Image.new("RGB", (cat.width + astronaut.width, max(cat.height, astronaut.height)), (128, 128, 128))
    canvas.paste(astronaut, (0, 0))
    canvas.paste(cat, (astronaut.width, 0))
    (result,) = pipeline([canvas])
    people = [a for a in result.animals if a.category == "person"]
    cats = [a for a in result.animals if a.category == "animal"]
    assert len(people) == 1 and people[0].name is None and people[0].box[0] < 0.5
    best = max(cats, key=lambda a: a.detection_conf)
    assert best.group == "mammal" and best.name in ("domestic cat", "Felis", "Felidae")


def test_unsure_person_box_on_an_animal_is_the_animal_and_a_sure_one_stands(pipeline, cat):
    unsure = variant(pipeline, fixed(Detection((0.0, 0.0, 1.0, 1.0), 0.4, "person")))
    (animal,) = unsure([cat])[0].animals
    assert (animal.category, animal.name) == ("animal", "domestic cat")
    sure = variant(pipeline, fixed(Detection((0.0, 0.0, 1.0, 1.0), 0.9, "person")))
    (person,) = sure([cat])[0].animals
    assert (person.category, person.name) == ("person", None)
    # an unsure person box over an animal the detector already has is that animal, counted once
    twice = variant(pipeline, fixed(Detection((0.05, 0.0, 0.9, 1.0), 0.8, "animal"),
                                    Detection((0.0, 0.0, 1.0, 1.0), 0.4, "person")))
    assert [a.category for a in twice([cat])[0].animals] == ["animal"]


def test_an_animal_box_without_an_animal_in_its_crop_is_dropped(pipeline, coffee, cat):
    box = Detection((0.2, 0.2, 0.6, 0.6), 0.6, "animal")  # a cup, called an animal by a detector
    assert variant(pipeline, fixed(box))([coffee])[0].animals == []
    (animal,) = variant(pipeline, fixed(box))([cat])[0].animals  # the same box on a cat stands
    assert animal.group == "mammal"


def test_the_strong_classifier_runs_once_per_crop(pipeline, cat):
    seen = []
    model = pipeline.strong_coarse.classifier.model
    handle = model.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    try:
        # routing at 1: every crop goes to the strong coarse classifier, then to its expert (the same Lite2)
        (result,) = variant(pipeline, fixed(Detection((0.1, 0.0, 0.8, 1.0), 0.8, "animal")), routing=1.0)([cat])
    finally:
        handle.remove()
    assert result.animals[0].name == "domestic cat"
    assert sum(seen) == 2  # the crop and the whole photo, each once
    assert pipeline.strong_coarse.classifier._memory == {}  # nothing kept after the call


def test_the_detector_sees_the_overview_and_the_crops_come_from_the_photo(pipeline, cat):
    seen = {}

    def detector(images):
        seen["detector"] = [image.size for image in images]
        return [[Detection((0.1, 0.0, 0.8, 1.0), 0.8, "animal"), Detection((0.4, 0.4, 0.1, 0.1), 0.6, "animal")]
                for _ in images]

    class Recording:  # the default coarse classifier, noting the crops it is asked about
        def __init__(self, coarse):
            self.coarse = coarse

        def __call__(self, crops):
            seen.setdefault("coarse", []).extend(crop.size for crop in crops)
            return self.coarse(crops)

    large = cat.resize((cat.width * 4, cat.height * 4))  # 1804x1200 as decoded
    (result,) = WildlifePipeline(detector, Recording(pipeline.coarse), pipeline.experts, pipeline.knowledge,
                                 overview_side=512)([large])
    assert seen["detector"] == [(902, 600)]  # reduced once, by 2
    # a box a tenth of the photo wide, widened by 15% a side: 235 pixels of the photo as decoded
    assert seen["coarse"][1] == (235, 235)
    assert "domestic cat" in [animal.name for animal in result.animals]


def test_crops_are_square_with_context_and_bounded():
    image = Image.new("RGB", (1000, 400))
    crop = Detection((0.4, 0.25, 0.1, 0.5), 0.9, "animal").crop(image, margin=0.1)
    assert crop.size == (240, 240)  # 200 tall, widened by 10% each side, squared around its centre
    edge = Detection((0.0, 0.0, 0.1, 0.5), 0.9, "animal").crop(image, margin=0.0)
    assert edge.size == (150, 200)  # squared around its centre, but kept within the image
    huge = Detection((0.0, 0.0, 1.0, 1.0), 0.9, "animal").crop(Image.new("RGB", (8000, 6000)))
    assert max(huge.size) == 512


def test_letterbox_keeps_the_whole_image_in_a_bounded_square():
    boxed = letterbox(Image.new("RGB", (20000, 10), (255, 0, 0)), 260)
    assert boxed.size == (260, 260)
    pixels = torch.from_numpy(np.asarray(boxed).reshape(-1, 3))
    assert (pixels == torch.tensor([255, 0, 0])).all(-1).any() and (pixels != torch.tensor([255, 0, 0])).any()


@pytest.mark.parametrize("bad", [{"person": 1.5}, {"species": -0.1}, {"group": "high"}, {"scene": True}])
def test_thresholds_must_be_fractions(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Thresholds(**bad)
