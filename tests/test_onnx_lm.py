"""The language model on onnxruntime (`lm.quantize`, `lm.onnx`): low-bit engines built once and cached,
decoding that matches torch, damaged or hostile engine folders refused by name, inference only."""

import json

import pytest
import torch

import qformer
from qformer.cli.main import main
from qformer.config import ConfigError, LMConfig
from qformer.deploy.engine import GRAPH, GRAPH_WEIGHTS, MANIFEST, OnnxCausalLM
from qformer.deploy.export import export_onnx
from qformer.deploy.exported import LM_FOLDER
from qformer.files import sha256_of
from qformer.lm import loading as lm_loading
from qformer.lm.loading import load_onnx_language_model

from .conftest import random_photo


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QFORMER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _tokens(model, images, prompts):
    pixels, _ = model.load_images(images)
    return model.generate(pixels, **model.processor.lm_generation(prompts), max_new_tokens=10)


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_a_quantized_lm_is_built_once_and_then_read_from_the_cache(quantize, cache, monkeypatch):
    model = qformer.create_model("tiny-random", lm={"quantize": quantize})
    assert model.lm.model is None and model.lm.engine.manifest["quantize"] == quantize
    graph = next(cache.glob(f"onnx-lm/{quantize}-*/{GRAPH}"))
    ops = graph.read_bytes()
    assert b"MatMulNBits" in ops
    images = [random_photo(k) for k in range(3)]
    tokens = _tokens(model, images, ["a photo of", "a", "a photo of a thing"])
    assert tokens.shape[0] == 3 and tokens.dtype == torch.long

    def no_torch_lm(config):
        raise AssertionError("the torch LM was loaded again")

    monkeypatch.setattr(lm_loading, "load_language_model", no_torch_lm)
    again = qformer.create_model("tiny-random", lm={"quantize": quantize})
    again.load_state_dict(model.state_dict())
    assert torch.equal(_tokens(again, images, ["a photo of", "a", "a photo of a thing"]), tokens)


def test_int8_first_step_logits_stay_close_to_torch(cache):
    reference = qformer.create_model("tiny-random")
    engine = qformer.create_model("tiny-random", lm={"quantize": "int8"}).lm.engine
    embeds = torch.randn(2, 6, reference.lm.hidden_size) * 0.2
    mask = torch.ones(2, 6, dtype=torch.long)
    with torch.no_grad():
        expected = reference.lm.model(inputs_embeds=embeds, attention_mask=mask).logits[:, -1]
    bias = torch.zeros(2, 1, 6, 6).masked_fill(~torch.ones(6, 6, dtype=torch.bool).tril(), float("-inf"))
    feeds = [embeds.numpy(), bias.numpy(), torch.arange(6).repeat(2, 1).numpy()]
    empty = [torch.zeros(2, engine.heads, 0, engine.head_dim).numpy()] * (2 * engine.layers)
    logits, _ = engine._run(*feeds, empty)
    spread = float(expected.max() - expected.min())
    assert float((torch.from_numpy(logits) - expected).abs().max()) < 0.05 * spread


def test_the_engine_decodes_greedily_for_inference_only(cache):
    model = qformer.create_model("tiny-random", lm={"quantize": "int8"})
    with pytest.raises(ValueError, match="greedily"):
        model.caption([random_photo(0)], num_beams=2)
    with pytest.raises(ValueError, match="inference only"):
        model.lm.loss(torch.zeros(1, 4, model.lm.hidden_size), torch.ones(1, 3, dtype=torch.long),
                      torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))
    # the plain-text path decodes on the engine too: the same tokens as the embeddings' path
    (text,) = model.lm.generate_text(["a photo"], max_new_tokens=3)
    ids = model.lm.tokenizer(["a photo"], add_special_tokens=False, return_tensors="pt")
    tokens = model.lm.generate_from_embeds(model.lm.embed(ids.input_ids), ids.attention_mask, max_new_tokens=3)
    assert text == model.lm.tokenizer.decode(tokens[0], skip_special_tokens=True).strip()


def test_quantize_is_checked_and_a_seq2seq_lm_is_refused(cache):
    with pytest.raises(ConfigError, match="lm.quantize='int3'"):
        qformer.create_model("tiny-random", lm={"quantize": "int3"})
    with pytest.raises(ValueError, match="causal language models"):
        qformer.create_model("tiny-random-t5", lm={"quantize": "int8"})


def test_a_damaged_or_hostile_engine_folder_is_refused_by_name_and_kept(tmp_path):
    export_onnx(qformer.create_model("tiny-random"), tmp_path / "out")
    folder = tmp_path / "out" / LM_FOLDER
    graph = folder / GRAPH
    original = graph.read_bytes()
    graph.write_bytes(original[:-8] + b"01234567")
    with pytest.raises(ValueError, match=f"{GRAPH}: missing, or its SHA-256 does not match"):
        qformer.create_model(str(tmp_path / "out"))
    assert graph.read_bytes()[-8:] == b"01234567"  # kept as it was, for the user to look at
    graph.write_bytes(original)
    weights = folder / GRAPH_WEIGHTS  # hashed while onnxruntime loads the graph: still named, and kept
    intact = weights.read_bytes()
    weights.write_bytes(intact[: len(intact) // 2])
    with pytest.raises(ValueError, match=f"{GRAPH_WEIGHTS}: missing, or its SHA-256 does not match"):
        load_onnx_language_model(LMConfig(name_or_path="unused", onnx=str(folder)))
    assert weights.stat().st_size == len(intact) // 2
    weights.write_bytes(intact)
    saved = (folder / MANIFEST).read_bytes()
    manifest = json.loads(saved)
    (folder / MANIFEST).write_text(json.dumps({**manifest, "layers": 10**9}))
    with pytest.raises(ValueError, match="SHA-256 does not match onnx.json"):  # the export hashes its manifests
        qformer.create_model(str(tmp_path / "out"))
    # an engine folder on its own (the cache's) checks what its manifest says, against the graph itself
    for field, value, message in [("graph", {"file": "../../x.onnx"}, "the graph file must be model.onnx"),
                                  ("weights", None, "the weights file must be model.weights"),
                                  ("tokenizer", "../../elsewhere", "the tokenizer must be the folder's own"),
                                  ("format", 99, "engine format 99"),
                                  ("layers", 10**9, "is no model's"),
                                  ("kv_heads", manifest["kv_heads"] + 1, "not those of model.onnx"),
                                  ("hidden_size", "576", "is no model's")]:
        (folder / MANIFEST).write_text(json.dumps({**manifest, field: value}))
        with pytest.raises(ValueError, match=message):
            load_onnx_language_model(LMConfig(name_or_path="unused", onnx=str(folder)))
    (folder / MANIFEST).write_bytes(saved)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    config["lm"]["onnx"] = "./../elsewhere"
    (tmp_path / "out" / "config.json").write_text(json.dumps(config))
    export = json.loads((tmp_path / "out" / "onnx.json").read_text())
    export["files"]["config.json"] = sha256_of(tmp_path / "out" / "config.json")  # a forger rewrites the hash too
    (tmp_path / "out" / "onnx.json").write_text(json.dumps(export))
    with pytest.raises(ConfigError, match="leads out of"):
        qformer.create_model(str(tmp_path / "out"))


@pytest.mark.parametrize("location", ["../secret.bin", "/absolute/secret.bin", "inside.bin"])
def test_a_graph_whose_weights_lie_outside_its_folder_is_refused(tmp_path, location):
    """The manifest may come with the graph: a matching hash proves nothing about where its data lies."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from qformer.files import sha256_of

    export_onnx(qformer.create_model("tiny-random"), tmp_path / "out")
    folder = tmp_path / "out" / LM_FOLDER
    secret = tmp_path / "out" / "secret.bin"
    secret.write_bytes(bytes(16))
    (folder / "inside.bin").symlink_to(secret)  # a link inside the folder that leads out of it
    location = location.replace("/absolute", str(tmp_path / "out"))
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight])
    (folder / GRAPH).write_bytes(helper.make_model(graph).SerializeToString())
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["graph"]["sha256"] = sha256_of(folder / GRAPH)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"{GRAPH}: onnxruntime cannot load this graph .*External data path"):
        OnnxCausalLM(folder)
    assert onnx.load(str(folder / GRAPH), load_external_data=False).graph.initializer[0].name == "w"  # kept


def test_an_engine_folder_loads_on_its_own(tmp_path):
    model = qformer.create_model("tiny-random").eval()
    export_onnx(model, tmp_path / "out")
    engine = OnnxCausalLM(tmp_path / "out" / LM_FOLDER)  # the folder alone: no model, no cache
    torch.manual_seed(0)
    embeds, mask = torch.randn(2, 5, engine.embeddings.shape[1]), torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    tokens = engine.greedy(embeds.numpy(), mask.numpy(), max_new_tokens=4, eos_token_id=None, pad_token_id=0)
    # float32 weights: the engine's greedy tokens are torch's, left padding included
    expected = model.lm.generate_from_embeds(embeds, mask, max_new_tokens=4, eos_token_id=None, pad_token_id=0)
    assert torch.equal(torch.from_numpy(tokens), expected)


def test_cli_quantize(tmp_path, cat, cache, capsys):
    image = str(tmp_path / "cat.jpg")
    cat.save(image)
    assert main(["caption", image, "--model", "tiny-random", "--quantize", "int4", "--max-new-tokens", "3"]) == 0
    assert main(["caption", image, "--model", "tiny-random", "--quantize", "int4", "--num-beams", "2"]) == 2
    assert "greedily" in capsys.readouterr().err
    assert main(["export", "--onnx", str(tmp_path / "q"), "--model", "tiny-random", "--quantize", "int8"]) == 0
    assert "int8 weights" in capsys.readouterr().out
    assert qformer.create_model(str(tmp_path / "q")).lm.engine.manifest["quantize"] == "int8"


def _snap_to_gguf_grids(lm: torch.nn.Module) -> None:
    """Put every linear weight on a Q4_1 grid (the output head on a Q8_0 one), as a GGUF file
    dequantized to float has them (blocks of 32 along the input dimension)."""
    with torch.no_grad():
        for name, module in lm.named_modules():
            if not isinstance(module, torch.nn.Linear):
                continue
            blocks = module.weight.reshape(module.weight.shape[0], -1, 32)
            if name.endswith("lm_head"):
                scale = (blocks.abs().amax(-1, keepdim=True) / 127).clamp_min(1e-8)  # the padding row is zeros
                snapped = (blocks / scale).round().clamp(-127, 127) * scale
            else:
                low, high = blocks.amin(-1, keepdim=True), blocks.amax(-1, keepdim=True)
                scale = ((high - low) / 15).clamp_min(1e-8)
                snapped = ((blocks - low) / scale).round().clamp(0, 15) * scale + low
            module.weight.copy_(snapped.reshape(module.weight.shape))


def test_int4_keeps_weights_that_came_from_a_gguf_file_exactly(tmp_path):
    from qformer.deploy.onnx_lm import export_causal_lm

    model = qformer.create_model("tiny-random")
    lm = model.lm.model
    lm.config.tie_word_embeddings = False
    lm.lm_head.weight = torch.nn.Parameter(lm.lm_head.weight.detach().clone())  # a head of its own, Q8_0 in GGUF
    _snap_to_gguf_grids(lm)
    manifest = export_causal_lm(lm, model.lm.tokenizer, tmp_path / "engine", "int4", builtin_tokenizer="byt5")
    # the head stays float; query, key and value (gate and up) run as one node each
    assert manifest["quantized_matmuls"] == {"int4": 14, "kept_float": 1, "quantized_nodes": 8}
    engine = OnnxCausalLM(tmp_path / "engine")
    embeds = torch.randn(3, 7, lm.config.hidden_size) * 0.5
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1] * 7, [0, 1, 1, 1, 1, 1, 1]])
    expected = lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=12, do_sample=False,
                           eos_token_id=1, pad_token_id=0)
    tokens = engine.greedy(embeds.numpy(), mask.numpy(), max_new_tokens=12, eos_token_id=1, pad_token_id=0)
    assert torch.equal(torch.from_numpy(tokens), expected)
