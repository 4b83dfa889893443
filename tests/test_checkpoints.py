"""save_pretrained -> from_pretrained gives the same model; anything that does not fit is refused by name."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import qformer
from qformer.bridge.checkpoint import CheckpointError

from .conftest import build

TEXTS = ["a cat", "a person"]


def outputs(model, images):
    pixels, _ = model.load_images(images)
    return {
        "queries": model.query_outputs(model.encode_images(pixels)),
        "prompt": model.visual_prompt(pixels),
        "itc": model.scores(images, TEXTS),
        "itm": model.scores(images, TEXTS, method="itm"),
        "captions": model.caption(images, max_new_tokens=6),
    }


@pytest.mark.parametrize("preset", ["tiny-random", "tiny-random-t5"])
def test_save_load_gives_identical_outputs(preset, tmp_path, cat, astronaut):
    model = build(preset).eval()
    with torch.no_grad():
        model.qformer.query_tokens.add_(0.5)  # differ from any fresh init
        before = outputs(model, [cat, astronaut])
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    stored = load_file(tmp_path / "model.safetensors")
    assert not any(k.startswith(("vision.", "lm.")) for k in stored), "frozen backbones must not be saved"
    assert "qformer.query_tokens" in stored and "projection.weight" in stored
    assert "Trainable parameters" in (tmp_path / "README.md").read_text()

    torch.manual_seed(123)  # a different seed: the bridge must come from the file, backbones from the config
    loaded = qformer.Blip2.from_pretrained(tmp_path)
    with torch.no_grad():
        after = outputs(loaded, [cat, astronaut])
    for key in ("queries", "prompt", "itc", "itm"):
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
    assert after["captions"] == before["captions"]
    assert qformer.create_model(str(tmp_path)).config == loaded.config


def test_truncated_file_is_refused(tmp_path):
    build().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        qformer.Blip2.from_pretrained(tmp_path)


@pytest.mark.parametrize("tamper, message", [
    (lambda s: s.pop("heads.itm_head.bias"), "missing 1 tensor(s): heads.itm_head.bias"),
    (lambda s: s.update(extra=torch.zeros(1)), "unexpected 1 tensor(s): extra"),
    (lambda s: s.update({"projection.bias": torch.zeros(7)}), "projection.bias: checkpoint (7,) vs model (32,)"),
])
def test_tampered_weights_are_named(tamper, message, tmp_path):
    build().save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    tamper(state)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        qformer.Blip2.from_pretrained(tmp_path)


def test_checkpoint_from_another_config_is_refused(tmp_path):
    build().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["qformer"]["num_queries"] = 6
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError,
                       match=r"qformer.query_tokens is \(1, 4, 32\), the config.s sizes make \(1, 6, 32\)"):
        qformer.Blip2.from_pretrained(tmp_path)


def test_compiled_and_ddp_prefixes_are_unwrapped(tmp_path, cat):
    model = build().eval()
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    save_file({"module._orig_mod." + k: v for k, v in state.items()}, tmp_path / "model.safetensors")
    loaded = qformer.Blip2.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.scores([cat], TEXTS), model.scores([cat], TEXTS), rtol=0, atol=0)


def test_missing_folder_contents(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        qformer.Blip2.from_pretrained(tmp_path)


def test_hub_id_loads_from_a_local_hub_cache(tmp_path, cat):
    """The real hub code path (hf_hub_download), served from a cache folder in the hub's own layout."""
    model = build().eval()
    snapshot = tmp_path / "models--someone--tiny-bridge" / "snapshots" / "0123abcd"
    model.save_pretrained(snapshot)
    (tmp_path / "models--someone--tiny-bridge" / "refs").mkdir()
    (tmp_path / "models--someone--tiny-bridge" / "refs" / "main").write_text("0123abcd")
    loaded = qformer.Blip2.from_pretrained("someone/tiny-bridge", cache_dir=tmp_path)
    torch.testing.assert_close(loaded.scores([cat], TEXTS), model.scores([cat], TEXTS), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="someone/other: could not get it from the Hugging Face hub"):
        qformer.Blip2.from_pretrained("someone/other", cache_dir=tmp_path)
