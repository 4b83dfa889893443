"""ONNX export of the visual path and the LM: parity with torch, identical greedy tokens, safe loading, the CLI."""

import json

import pytest
import torch

import qformer
from qformer.cli.main import main
from qformer.deploy.export import export_onnx
from qformer.deploy.exported import MANIFEST, VISUAL_GRAPH


@pytest.mark.parametrize("name", ["tiny-random", "bridge"])
def test_exported_visual_prompt_and_greedy_tokens_match_torch(name, tmp_path, photos):
    model = qformer.create_model(name).eval()
    manifest = export_onnx(model, tmp_path / "onnx")
    assert manifest["visual_prompt"]["max_abs_error_vs_torch"] <= 1e-4
    assert manifest["language_model"]["engine"] == "onnxruntime"
    exported = qformer.create_model(str(tmp_path / "onnx"))
    assert exported.onnx_visual is not None and model.onnx_visual is None
    assert exported.lm.engine is not None and exported.lm.model is None  # no torch LM is loaded
    pixels, _ = model.load_images(photos)
    with torch.no_grad():
        assert (exported.visual_prompt(pixels) - model.visual_prompt(pixels)).abs().max() <= 1e-4
    assert exported.caption(photos, max_new_tokens=8) == model.caption(photos, max_new_tokens=8)
    questions = ["what is this?", "how many things are in the picture, and which colour are they?", "where?"]
    assert exported.ask(photos, questions) == model.ask(photos, questions)  # prompts of three lengths: padding


def test_a_seq2seq_language_model_stays_in_torch_and_says_why(tmp_path):
    manifest = export_onnx(qformer.create_model("tiny-random-t5"), tmp_path / "onnx")
    assert manifest["language_model"] == {"engine": "torch", "why": manifest["language_model"]["why"]}
    assert "seq2seq" in manifest["language_model"]["why"]
    assert qformer.create_model(str(tmp_path / "onnx")).lm.engine is None


def test_export_keeps_the_model_mode_and_refuses_to_overwrite(tmp_path):
    model = qformer.create_model("tiny-random").train()
    export_onnx(model, tmp_path / "out")
    assert model.training and model.qformer.layers[0].query_ffn.training
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_onnx(model, tmp_path / "out")
    export_onnx(model, tmp_path / "out", overwrite=True)


def test_a_changed_graph_is_refused_by_name(tmp_path):
    export_onnx(qformer.create_model("tiny-random"), tmp_path / "out")
    graph = tmp_path / "out" / VISUAL_GRAPH
    graph.write_bytes(graph.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ValueError, match="visual_prompt.onnx: its SHA-256 does not match"):
        qformer.create_model(str(tmp_path / "out"))
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    manifest["visual_prompt"]["file"] = "../../elsewhere.onnx"
    (tmp_path / "out" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="must be visual_prompt.onnx"):
        qformer.create_model(str(tmp_path / "out"))


def test_cli_export_then_caption(tmp_path, cat, capsys):
    cat_file = str(tmp_path / "cat.jpg")
    cat.save(cat_file)
    out = tmp_path / "exported"
    assert main(["export", "--onnx", str(out), "--model", "tiny-random"]) == 0
    assert "language model runs on onnxruntime" in capsys.readouterr().out
    # every file of the folder gets the same mode: safetensors' own is owner-only
    assert len({path.stat().st_mode & 0o777 for path in out.rglob("*") if path.is_file()}) == 1
    assert main(["export", "--onnx", str(out), "--model", "tiny-random"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["caption", cat_file, "--model", str(out), "--max-new-tokens", "4"]) == 0
    assert main(["export", "--onnx", str(tmp_path / "x"), "--model", "no-such-model"]) == 2


def test_exporting_the_default_records_it_so_the_folder_routes_photos(tmp_path, capsys, monkeypatch):
    import qformer.deploy.export

    manifest = {"visual_prompt": {"file": "visual_prompt.onnx", "max_abs_error_vs_torch": 1e-6},
                "language_model": {"engine": "torch", "why": "stubbed"}}
    asked = []
    monkeypatch.setattr(qformer.deploy.export, "export_onnx",
                        lambda model, out, overwrite=False, captioner="bridge": asked.append(captioner) or manifest)
    assert main(["export", "--onnx", str(tmp_path / "out"), "--model", "default"]) == 0
    assert "photos by the grounded captioner" in capsys.readouterr().out
    assert main(["export", "--onnx", str(tmp_path / "out2"), "--model", "tiny-random"]) == 0
    assert "photos" not in capsys.readouterr().out
    assert asked == ["default", "bridge"]
    assert main(["export", "--onnx", str(tmp_path / "out3"), "--model", "grounded"]) == 2
    assert "no bridge to export" in capsys.readouterr().err


def test_an_occupied_export_folder_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the folder was checked")

    monkeypatch.setattr(qformer, "create_model", no_loading)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert main(["export", "--onnx", str(tmp_path / "out"), "--model", "bridge"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
