"""Grounded captions for photos and the routed default: facts from a real detector and classifier,
words only from the facts, the photo-or-drawing router, and the CLI's records of which path answered."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qformer.cli.main import main
from qformer.grounded import Facts, GroundedCaptioner, PhotoRouter, Thing, load_captioner
from qformer.grounded.colour import dominant_colour, plain_colour
from qformer.grounded.language import CANNOT, answer, caption, plural, singular
from qformer.vision.classifiers import LITE0, ImageNetClassifier

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture(scope="module")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="module")
def routed():
    return load_captioner("default")


def thing(name, count=1, x=0.1, animal=False, colour="brown"):
    return Thing(name, count, [(x, 0.2, 0.2, 0.3)] * count, 0.8, "detector", animal=animal, colour=colour)


FACTS = Facts([thing("horse", 2, animal=True), thing("person", x=0.7, colour="blue"), thing("tabby cat", animal=True)])


def test_caption_counts_and_names_only_what_the_facts_hold():
    assert caption(FACTS) == "two horses, a person and a tabby cat"
    assert caption(Facts([thing("elephant")])) == "an elephant"
    assert caption(Facts()) == "a photo in which nothing could be named"
    rng = np.random.default_rng(0)
    vocabulary = ["dog", "bus", "wine glass", "person", "sheep", "knife", "teddy bear"]
    for _ in range(50):
        names = rng.choice(vocabulary, size=rng.integers(1, 4), replace=False)
        facts = Facts([thing(str(n), int(rng.integers(1, 12))) for n in names])
        words = caption(facts, most=5)
        for n in vocabulary:  # a noun appears only if it is a fact
            assert (n in words or plural(n) in words) == (n in names), (words, names)


def test_plural_and_singular_round_trip():
    for word in ("horse", "person", "bus", "knife", "sheep", "butterfly", "wine glass", "box"):
        assert singular(plural(word)) == word


@pytest.mark.parametrize("question,expected", [
    ("How many horses are there?", "two"), ("how many animals?", "three"), ("how many people are there", "one"),
    ("how many giraffes are there?", "no"), ("Is there a cat?", "yes"), ("is there a dog?", "no"),
    ("are there any horses?", "yes"), ("where is the person?", "on the right"), ("what colour is the person?", "blue"),
    ("what animals are these?", "two horses and a tabby cat"), ("what is this?",
                                                                "two horses, a person and a tabby cat"),
])
def test_answers_come_from_the_facts(question, expected):
    assert answer(FACTS, question) == expected


def test_a_question_the_facts_cannot_answer_says_so():
    for question in ("why is the horse sad?", "what colour is the giraffe?", "where is the dog?"):
        assert answer(FACTS, question).startswith(CANNOT)
    assert answer(Facts([thing("car")]), "what animal is this?") == "I see no animal"


@pytest.mark.parametrize("rgb,name", [((220, 30, 30), "red"), ((40, 160, 60), "green"), ((30, 60, 200), "blue"),
                                      ((250, 250, 250), "white"), ((5, 5, 5), "black"), ((128, 128, 128), "grey"),
                                      ((120, 70, 30), "brown"), ((240, 220, 40), "yellow")])
def test_dominant_colour(rgb, name):
    assert dominant_colour(np.full((8, 8, 3), rgb, dtype=np.uint8)) == name


def test_a_picture_of_one_flat_colour_is_plain():
    rng = np.random.default_rng(0)
    dark_frame = np.clip(rng.normal(12, 6, (1080, 1920, 3)), 0, 255).astype(np.uint8)  # a night frame's noise
    assert plain_colour(Image.fromarray(dark_frame)) == "black"
    assert plain_colour(Image.new("RGB", (1, 1), (250, 250, 250))) == "white"
    assert plain_colour(Image.new("RGB", (20000, 1), (200, 30, 30))) == "red"
    assert plain_colour(Image.new("L", (64, 64), 128)) == "grey"
    dark_frame[525:555, 885:915] = 150  # a 30-pixel object in a 1920-pixel frame, cut by four blocks, is something
    assert plain_colour(Image.fromarray(dark_frame)) is None
    static = rng.normal(128, 40, (480, 640, 3)).clip(0, 255).astype(np.uint8)
    assert plain_colour(Image.fromarray(static)) is None
    sky = np.linspace(60, 200, 480, dtype=np.float32)[:, None, None].repeat(640, 1).repeat(3, 2)
    assert plain_colour(Image.fromarray(sky.astype(np.uint8))) is None
    for name in ("chelsea.jpg", "scene.png", "fox-emoji.png"):
        assert plain_colour(Image.open(SAMPLES / name).convert("RGB")) is None
    assert caption(Facts(plain="black")) == "a plain black picture"
    assert answer(Facts(plain="black"), "What colour is the picture?") == "black"
    assert answer(Facts(plain="black"), "is there a circle?") == "no"


def test_a_blank_picture_is_said_to_be_blank_on_either_path(routed, tmp_path):
    """A small blank canvas looks like a drawing to the router; the bridge, trained on drawings of
    shapes, would caption it with one. The routed default says what is there instead."""
    blank = tmp_path / "blank.png"
    Image.new("RGB", (64, 64)).save(blank)
    assert routed.router([Image.open(blank).convert("RGB")])[0] < routed.router.threshold
    first, = routed.caption([blank])
    assert (first.source, first.text, first.facts.to_dict()["plain"]) == ("grounded", "a plain black picture", "black")
    assert routed.ask([blank], "what colour is the image?")[0].text == "black"
    assert routed.ask([blank], "how many circles are there?")[0].text == "no"
    from qformer.serving.caption_ensemble import caption_ensemble

    ranked = caption_ensemble("default")(image=str(blank))["ranked"]  # the ensemble routes it the same way
    assert ranked["best"] == "a plain black picture" and [c["generator"] for c in ranked["candidates"]] == ["grounded"]


def test_photos_are_grounded_and_drawings_go_to_the_bridge(routed, cat, astronaut, coffee, samples):
    answers = routed.caption([cat, astronaut, coffee, samples / "scene.png", samples / "fox-emoji.png"])
    assert [a.source for a in answers] == ["grounded"] * 3 + ["bridge"] * 2
    assert "cat" in answers[0].text and answers[1].text == "a person" and "cup" in answers[2].text
    assert answers[0].facts.things[0].animal and answers[3].facts is None
    assert routed.ask([cat], "what animal is this?")[0].text.endswith("cat")
    assert routed.ask([cat], "how many dogs are there?")[0].text == "no"


def test_router_scores_photos_high_and_drawings_low(cat, astronaut, samples):
    router = PhotoRouter(ImageNetClassifier(*LITE0))
    photo, person, scene = router([cat, astronaut, Image.open(samples / "scene.png").convert("RGB")])
    assert photo > 0.9 and person > 0.9 and scene < 0.1


def test_damaged_router_file_is_named(tmp_path):
    broken = tmp_path / "router.safetensors"
    broken.write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="router.safetensors"):
        PhotoRouter(ImageNetClassifier(*LITE0), broken)


def test_a_router_trained_on_other_features_is_refused(tmp_path):
    from safetensors.torch import save_file

    other = tmp_path / "router.safetensors"
    save_file({"weight": torch.zeros(1280), "bias": torch.zeros(1)}, str(other),
              metadata={"features": "efficientnet_lite0"})
    with pytest.raises(ValueError,
                       match="trained on efficientnet_lite0 features, not tf_efficientnet_lite0's; retrain"):
        PhotoRouter(ImageNetClassifier(*LITE0), other)


def test_grounded_captioner_keeps_going_past_an_unreadable_image(cat, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    grounded = GroundedCaptioner()
    first, second = grounded.caption([str(broken), cat], return_exceptions=True)
    assert "broken.jpg" in str(first) and "cat" in second.text
    with pytest.raises(ValueError, match="empty"):
        grounded.ask([cat], "   ")


def test_cli_records_the_route_and_the_facts(samples, capsys):
    assert main(["caption", str(samples / "chelsea.jpg"), str(samples / "scene.png"), "--json"]) == 0
    photo, drawing = json.loads(capsys.readouterr().out)
    assert photo["source"] == "grounded" and "cat" in photo["caption"] and photo["facts"]["things"]
    assert drawing["source"] == "bridge" and "facts" not in drawing
    assert main(["ask", str(samples / "chelsea.jpg"), "", "--model", "grounded"]) == 2
    assert main(["caption", str(samples / "missing.jpg"), "--model", "grounded"]) == 1


def test_heatmaps_are_painted_only_where_the_encoder_looked(tiny, cat):
    from dataclasses import replace

    from qformer.bridge.attention_maps import heatmaps, seen_box

    preprocess = replace(tiny.vision.preprocessor, size=224, crop_pct=0.875)
    assert seen_box(preprocess, 451, 300) == (94, 19, 357, 281)  # short side 300 -> 256, centre 224 kept
    assert seen_box(replace(preprocess, crop_pct=None), 451, 300) == (0, 0, 451, 300)  # squashed: all seen
    assert seen_box(preprocess, 4000, 100) == (1956, 6, 2044, 94)  # cut to 4:1 first, then the centre square
    tiny.vision.preprocessor = replace(tiny.vision.preprocessor, crop_pct=0.875)
    tiny.processor.image_preprocessor = tiny.vision.preprocessor
    left, top, right, bottom = seen_box(tiny.vision.preprocessor, *cat.size)
    overlay, _ = heatmaps(tiny, cat, max_queries=1)[0]
    photo, painted = np.asarray(cat.convert("RGB")), np.asarray(overlay)
    outside = np.ones(photo.shape[:2], bool)
    outside[top:bottom, left:right] = False
    assert (painted[outside] == photo[outside]).all() and (painted[~outside] != photo[~outside]).any()


def test_unsure_animals_say_their_group_and_count_once(cat):
    from qformer.grounded.facts import FactFinder
    from qformer.wildlife import Detection

    base = GroundedCaptioner().finder
    unsure = [Detection((0.0, 0.0, 0.4, 0.5), 0.4, "animal", label="dog"),
              Detection((0.6, 0.5, 0.4, 0.5), 0.45, "animal", label="horse")]
    finder = FactFinder(detector=lambda images: [unsure for _ in images], classifier=base.classifier, rename=1.0)
    (facts,) = finder([cat])
    names = [t.name for t in facts.things]
    assert "dog" not in names and "horse" not in names  # NanoDet's unsure COCO names are not repeated
    assert sum(t.count for t in facts.things if t.animal) == 2 and len(set(names)) == len(names)


def test_default_means_the_routed_captioner_in_the_api_and_in_the_ensemble(routed):
    import qformer
    from qformer.grounded import RoutedCaptioner
    from qformer.serving.caption_ensemble import caption_ensemble

    model = qformer.create_model("default")
    assert isinstance(model, RoutedCaptioner) and isinstance(qformer.create_model("bridge"), qformer.Blip2)
    with pytest.raises(ValueError, match="no bridge to configure"):
        qformer.create_model("grounded", lm={"quantize": "int4"})
    cat = str(SAMPLES / "chelsea.jpg")
    (answer,) = model.caption([cat])
    assert answer.source == "grounded" and answer.text == routed.caption([cat])[0].text
    ranked = caption_ensemble("default")(image=cat)["ranked"]  # a photo never reaches the bridge's decodings
    assert ranked["best"] == answer.text and [c["generator"] for c in ranked["candidates"]] == ["grounded"]
