"""Folders from someone else are closed: every path a saved config or an export's manifests name stays
inside the folder once links are followed, every number in them is bounded before anything is
allocated, and a hostile tokenizer is one sentence that names its file."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

import qformer
from qformer.cli.main import main
from qformer.config import ConfigError
from qformer.deploy.engine import EMBEDDINGS, GRAPH, OnnxCausalLM
from qformer.deploy.export import export_onnx
from qformer.deploy.exported import LM_FOLDER, MANIFEST
from qformer.deploy.lite import LiteCaptioner
from qformer.files import sha256_of

from .conftest import SAMPLES


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The shipped default with its int4 language model, exported: a folder the torch-free runtime reads."""
    out = tmp_path_factory.mktemp("export") / "default-int4"
    export_onnx(qformer.create_model("bridge", lm={"quantize": "int4"}), out)
    return out


@pytest.fixture
def copy(exported, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(exported, folder, symlinks=True)
    return folder


def rewrite(folder: Path, name: str, change) -> None:
    """Change a JSON file of an exported folder, and its hash in onnx.json too, as a forger would."""
    path = folder / name
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    manifest = json.loads((folder / MANIFEST).read_text())
    if name in manifest["files"]:
        manifest["files"][name] = sha256_of(path)
        (folder / MANIFEST).write_text(json.dumps(manifest))


def saved(tmp_path: Path, change) -> Path:
    folder = tmp_path / "model"
    qformer.create_model("tiny-random").save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("section, key, value", [
    ("lm", "onnx", "/tmp"),
    ("lm", "tokenizer", "/etc"),
    ("lm", "tokenizer", "~/.ssh"),
    ("qformer", "tokenizer", "../../.."),
    ("qformer", "bert_init", "./../../x"),
    ("lm", "gguf_file", "../../x.gguf"),
    ("vision", "model_name", "local-dir:/etc"),
])
def test_a_saved_config_names_nothing_outside_its_folder(tmp_path, section, key, value):
    folder = saved(tmp_path, lambda c: c[section].update({key: value}))
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        qformer.create_model(str(folder))


def test_a_hub_id_that_is_also_a_local_folder_is_refused(tmp_path, monkeypatch):
    folder = saved(tmp_path, lambda c: c["lm"].update({"tokenizer": "secrets"}))
    (tmp_path / "secrets").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="a file or folder of that name is where this program runs"):
        qformer.create_model(str(folder))


def test_the_callers_own_paths_are_the_callers(tmp_path):
    """Overrides come from the caller, not the folder: they may name anything the caller can read."""
    folder = saved(tmp_path, lambda c: None)
    model = qformer.create_model(str(folder), lm={"tokenizer": "byt5"})
    assert model.config.lm.tokenizer == "byt5"


def test_an_export_with_an_absolute_language_model_is_refused(copy):
    rewrite(copy, "config.json", lambda c: {**c, "lm": {**c["lm"], "onnx": str(copy / LM_FOLDER)}})
    assert "the folder's own" in LiteCaptioner.unsupported(copy)
    with pytest.raises(ConfigError, match="the folder's own"):
        qformer.create_model(str(copy))


@pytest.mark.parametrize("name", [GRAPH, EMBEDDINGS])
def test_a_graph_or_table_linked_out_of_the_folder_is_refused_even_under_its_own_hash(copy, tmp_path, name):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / name
    shutil.move(copy / LM_FOLDER / name, target)
    os.symlink(target, copy / LM_FOLDER / name)  # the same bytes, so the same SHA-256
    with pytest.raises(ValueError, match="is a link out of"):
        OnnxCausalLM(copy / LM_FOLDER)


def test_a_tokenizer_folder_linked_out_of_the_folder_is_refused(copy, tmp_path):
    shutil.move(copy / LM_FOLDER / "tokenizer", tmp_path / "tokenizer")
    os.symlink(tmp_path / "tokenizer", copy / LM_FOLDER / "tokenizer")
    assert "is a link out of" in LiteCaptioner.unsupported(copy)
    with pytest.raises(ValueError, match="is a link out of"):
        OnnxCausalLM(copy / LM_FOLDER).tokenizer_source


def test_a_preprocessing_that_would_resize_to_40960_pixels_is_refused(copy):
    rewrite(copy, MANIFEST, lambda m: {**m, "preprocess": {**m["preprocess"], "size": 4096, "crop_pct": 0.1}})
    with pytest.raises(ValueError, match="values no encoder uses"):
        LiteCaptioner(copy)


def test_every_file_an_export_reads_is_hashed(copy):
    for name in ("config.json", f"{LM_FOLDER}/engine.json", f"{LM_FOLDER}/tokenizer/tokenizer.json"):
        assert name in json.loads((copy / MANIFEST).read_text())["files"]
    engine = copy / LM_FOLDER / "engine.json"
    engine.write_text(json.dumps({**json.loads(engine.read_text()), "layers": 10**9}))
    assert "SHA-256 does not match" in LiteCaptioner.unsupported(copy)
    assert main(["caption", str(SAMPLES / "scene.png"), "--model", str(copy)]) == 1


def test_prompt_lengths_and_bridge_sizes_are_bounded_before_anything_is_allocated(tmp_path):
    with pytest.raises(ConfigError, match="lm.max_prompt_tokens must be from 1 to 4096"):
        qformer.create_model("tiny-random", lm={"max_prompt_tokens": 10**9})
    huge = saved(tmp_path, lambda c: c["qformer"].update({"num_queries": 4000, "hidden_size": 16384,
                                                           "intermediate_size": 16384, "num_heads": 16}))
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="parameters, over"):
        qformer.create_model(str(huge))
    wide = saved(tmp_path / "wide", lambda c: c["qformer"].update({"num_queries": 4000}))
    with pytest.raises(ValueError, match=r"qformer.query_tokens is \(1, 4, 32\), the config's sizes make \(1, 4000"):
        qformer.create_model(str(wide))
    assert time.perf_counter() - start < 30  # refused from the numbers, not after building them


def test_a_random_backbone_of_a_trillion_parameters_is_refused_unbuilt(tmp_path):
    def huge(config):
        config["lm"]["random_config"].update({"hidden_size": 1 << 16, "num_hidden_layers": 200})

    with pytest.raises(ConfigError, match="parameters, over"):
        qformer.create_model(str(saved(tmp_path, huge)))


def test_a_tokenizer_whose_regex_panics_is_one_sentence_that_names_it(copy, capsys):
    path = copy / LM_FOLDER / "tokenizer" / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    tokenizer["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "(a|aa)+$"}, "behavior": "Isolated",
                                  "invert": False}
    rewrite(copy, f"{LM_FOLDER}/tokenizer/tokenizer.json", lambda _: tokenizer)
    captioner = LiteCaptioner(copy)
    with pytest.raises(ValueError, match="tokenizer.json: tokenizing the prompt failed"):
        captioner.ask([str(SAMPLES / "scene.png")], ["a" * 900 + "!"])
    assert main(["ask", str(SAMPLES / "scene.png"), "a" * 900 + "!", "--model", str(copy)]) == 1
    err = capsys.readouterr().err
    assert "tokenizer.json" in err and "Traceback" not in err
