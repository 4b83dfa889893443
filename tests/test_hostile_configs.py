"""Configs and checkpoints from someone else: no code runs, no path leaves its folder, wrong values are
named, damaged weights are refused, and the same input always gives the same answer."""

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import qformer
from qformer.bridge.checkpoint import CheckpointError
from qformer.cli.main import main
from qformer.config import Blip2Config, ConfigError
from qformer.pretrained.weights import WeightsError
from qformer.training.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
TINY = json.loads((ROOT / "configs" / "models" / "tiny-random.json").read_text())
HF_TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
           "image_size": 32, "patch_size": 8}


class WritesMarker:
    """A pickle that, if ever loaded, writes a file: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code from a pickle ran"))


def malicious_folder(tmp_path: Path, vision: dict, pickle_name: str) -> tuple[Path, Path]:
    folder, marker = tmp_path / "model", tmp_path / "MARKER"
    qformer.create_model("tiny-random").save_pretrained(folder)  # real bridge weights beside the hostile config
    (folder / "vision").mkdir(parents=True)
    with open(folder / "vision" / pickle_name, "wb") as f:
        pickle.dump({"weight": WritesMarker(marker)}, f)
    (folder / "config.json").write_text(json.dumps({**TINY, "vision": vision}))
    return folder, marker


@pytest.fixture
def photo(tmp_path, cat):
    path = tmp_path / "x.png"
    cat.resize((64, 48)).save(path)
    return str(path)


@pytest.mark.parametrize("vision, pickle_name", [
    ({"backend": "transformers", "model_name": "CLIPVisionModel", "pretrained": "./vision",
      "model_kwargs": {"weights_only": False}}, "pytorch_model.bin"),
    ({"backend": "open_clip", "model_name": "ViT-B-32", "pretrained": "./vision/open_clip.bin",
      "model_kwargs": {"weights_only": False}}, "open_clip.bin"),
    ({"backend": "timm", "model_name": "resnet10t", "pretrained": "./vision/weights.pth",
      "model_kwargs": {"pretrained_cfg_overlay": {"file": "x"}}}, "weights.pth"),
])
def test_a_config_cannot_turn_off_weights_only(tmp_path, photo, capsys, vision, pickle_name):
    folder, marker = malicious_folder(tmp_path, vision, pickle_name)
    assert main(["caption", photo, "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "loader options cannot be set from a config" in err and "Traceback" not in err
    assert not marker.exists(), "code from a pickle ran"


@pytest.mark.parametrize("vision, pickle_name, said", [
    ({"backend": "transformers", "model_name": "CLIPVisionModel", "pretrained": "./vision",
      "model_kwargs": HF_TINY}, "pytorch_model.bin", "pickle-format weights"),
    ({"backend": "open_clip", "model_name": "ViT-B-32", "pretrained": "./vision/open_clip.bin"}, "open_clip.bin",
     ".safetensors files only"),
    ({"backend": "timm", "model_name": "resnet10t", "pretrained": "./vision/weights.pth"}, "weights.pth",
     "convert it once"),
])
def test_pickle_weights_are_refused_with_how_to_convert(tmp_path, photo, capsys, vision, pickle_name, said):
    folder, marker = malicious_folder(tmp_path, vision, pickle_name)
    (folder / "vision" / "config.json").write_text(json.dumps({"model_type": "clip_vision_model", **HF_TINY}))
    assert main(["caption", photo, "--model", str(folder)]) == 1
    assert said in capsys.readouterr().err
    assert not marker.exists(), "code from a pickle ran"


def test_loader_options_are_refused_anywhere_in_a_config():
    for section, key, value in [("vision", "model_kwargs", {"trust_remote_code": True}),
                                ("vision", "model_kwargs", {"vision_cfg": {"weights_only": False}}),
                                ("lm", "random_config", {**TINY["lm"]["random_config"], "trust_remote_code": True})]:
        data = json.loads(json.dumps(TINY))
        data[section][key] = value
        with pytest.raises(ConfigError, match="loader options cannot be set from a config"):
            Blip2Config.from_dict(data)
    with pytest.raises(ConfigError, match="architecture settings only"):
        qformer.create_model("tiny-random", vision={"model_kwargs": {"features_only": True}})


@pytest.mark.parametrize("section, key", [("lm", "name_or_path"), ("vision", "pretrained")])
def test_saved_paths_stay_inside_the_checkpoint_folder(tmp_path, photo, capsys, section, key):
    tiny = qformer.create_model("tiny-random")
    tiny.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    config[section][key] = "./../../../../etc/passwd"
    if section == "lm":
        config["lm"]["random_config"] = None
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    assert main(["caption", photo, "--model", str(tmp_path / "model")]) == 2
    assert "leads out of" in capsys.readouterr().err


def test_a_symlink_out_of_the_checkpoint_folder_is_refused(tmp_path):
    tiny = qformer.create_model("tiny-random")
    tiny.save_pretrained(tmp_path / "model")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "model" / "vision")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    config["vision"]["pretrained"] = "./vision"
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="is a link out of"):
        qformer.Blip2.from_pretrained(tmp_path / "model")


def saved_tiny(tmp_path: Path) -> Path:
    qformer.create_model("tiny-random").save_pretrained(tmp_path / "model")
    return tmp_path / "model" / "model.safetensors"


def test_integer_weights_where_floats_belong_are_refused_by_name(tmp_path, photo, capsys):
    weights = saved_tiny(tmp_path)
    state = load_file(weights)
    state["projection.bias"] = torch.full_like(state["projection.bias"], 10**9, dtype=torch.int32)
    save_file(state, weights)
    with pytest.raises(CheckpointError, match=r"wrong type: projection.bias: checkpoint torch.int32"):
        qformer.Blip2.from_pretrained(weights.parent)
    assert main(["caption", photo, "--model", str(weights.parent)]) == 1
    assert "projection.bias" in capsys.readouterr().err


def test_non_finite_weights_are_refused_by_name(tmp_path):
    weights = saved_tiny(tmp_path)
    state = load_file(weights)
    state["qformer.query_tokens"][0, 1] = float("nan")
    save_file(state, weights)
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) holding NaN or infinity .*: qformer.query_tokens"):
        qformer.Blip2.from_pretrained(weights.parent)
    everything = {k: torch.full_like(v, float("inf")) for k, v in state.items()}
    save_file(everything, weights)
    with pytest.raises(CheckpointError, match="holding NaN or infinity"):
        qformer.Blip2.from_pretrained(weights.parent)


@pytest.mark.parametrize("change, said", [
    (lambda c: c["qformer"].update(num_layers="4"), "qformer.num_layers must be an integer, got a string"),
    (lambda c: c["qformer"].update(num_queries=2.5), "qformer.num_queries must be an integer, got a number (2.5)"),
    (lambda c: c["qformer"].update(hidden_size=None), "qformer.hidden_size must be an integer, got null"),
    (lambda c: c.update(vision=["timm"]), "vision must be an object, got a list"),
    (lambda c: c.pop("vision"), "the required key 'vision' is missing"),
    (lambda c: c["vision"].update(mean=[0.5, 0.5]), "vision.mean must be a list of 3 numbers or null"),
    (lambda c: c["lm"].update(prompt=7), "lm.prompt must be a string, got an integer (7)"),
])
def test_config_values_of_the_wrong_type_are_named(tmp_path, photo, capsys, change, said):
    config = json.loads(json.dumps(TINY))
    change(config)
    with pytest.raises(ConfigError, match=said.replace("(", "[(]").replace(")", "[)]")):
        Blip2Config.from_dict(config)
    (tmp_path / "bad.json").write_text(json.dumps(config))
    assert main(["caption", photo, "--model", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_pretrained_that_is_not_a_weights_file_is_named(tmp_path, photo, capsys):
    not_weights = tmp_path / "notes.safetensors"
    not_weights.write_text("these are my notes")
    model = {**TINY, "vision": {**TINY["vision"], "pretrained": str(not_weights)}}
    (tmp_path / "model.json").write_text(json.dumps(model))
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        qformer.create_model(str(tmp_path / "model.json"))
    assert main(["caption", photo, "--model", str(tmp_path / "model.json")]) == 1
    assert str(not_weights) in capsys.readouterr().err


def test_recipe_overrides_read_numbers_as_people_write_them():
    recipe = load_recipe(ROOT / "configs/train/tiny-stage1.yaml", ["optim.lr=1e-4", "optim.betas=[0.9, 0.98]"])
    assert recipe.optim.lr == 1e-4 and recipe.optim.betas == (0.9, 0.98)
    with pytest.raises(ConfigError, match="optim.lr must be a number, got a string"):
        load_recipe(ROOT / "configs/train/tiny-stage1.yaml", ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="max_steps must be an integer, got a number"):
        load_recipe(ROOT / "configs/train/tiny-stage1.yaml", ["max_steps=1.5"])
    with pytest.raises(ConfigError, match="'optim.lr' is not a section"):
        load_recipe(ROOT / "configs/train/tiny-stage1.yaml", ["optim.lr.x=1"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['optimm'\]"):
        load_recipe(ROOT / "configs/train/tiny-stage1.yaml", ["optimm.lr=1"])


def test_create_model_returns_a_model_ready_for_inference(cat):
    model = qformer.create_model("tiny-random")
    assert not model.training, "create_model must give eval mode, as from_pretrained does"


def test_inference_has_no_dropout_whatever_the_mode(cat):
    model = qformer.create_model("tiny-random", qformer={"dropout": 0.5})
    expected = model.caption([cat], max_new_tokens=8)
    expected_scores = model.scores([cat], ["a cat", "a dog"])
    model.train()
    for _ in range(3):
        assert model.caption([cat], max_new_tokens=8) == expected
        assert model.ask([cat], "what is it?", max_new_tokens=4) == model.ask([cat], "what is it?", max_new_tokens=4)
        torch.testing.assert_close(model.scores([cat], ["a cat", "a dog"]), expected_scores)
    assert model.training and model.qformer.training, "the caller's mode is given back"


@pytest.mark.parametrize("recipe", sorted((ROOT / "configs/train").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_reads_as_a_valid_recipe(recipe):
    loaded = load_recipe(recipe, [])
    assert loaded.max_steps > 0 and loaded.output_dir.startswith("runs/")
