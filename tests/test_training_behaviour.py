"""Only the bridge trains: every loss reaches the bridge, nothing reaches the backbones."""

import pytest
import torch

from .conftest import build, losses_for

TEXTS = ["a cat on a rug", "an astronaut", "a cup of coffee"]


def frozen_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("vision.", "lm."))}


def grads(model):
    return {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("preset", ["tiny-random", "tiny-random-t5"])
def test_stage1_reaches_every_bridge_parameter(preset, photos):
    model = build(preset).train()
    pixels, _ = model.load_images(photos)
    losses_for(model, pixels, TEXTS, stage=1)["loss"].backward()
    for name, grad in grads(model).items():
        if name.startswith(("vision.", "lm.")):
            assert grad is None, f"frozen {name} got a gradient"
        elif not name.startswith("projection."):  # the LM projection belongs to stage 2
            assert grad is not None and grad.abs().sum() > 0, f"stage 1 gave {name} no gradient"


@pytest.mark.parametrize("loss, untouched", [
    ("itc", ("heads.itm_head.", "heads.text_head.")),
    ("itm", ("heads.text_head.", "heads.vision_proj.", "heads.text_proj.", "heads.temperature")),
    ("itg", ("heads.itm_head.", "heads.vision_proj.", "heads.text_proj.", "heads.temperature")),
])
def test_each_stage1_loss_trains_queries_and_its_own_head(loss, untouched, photos):
    model = build().train()
    pixels, _ = model.load_images(photos)
    losses_for(model, pixels, TEXTS, stage=1)[loss].backward()
    g = grads(model)
    assert g["qformer.query_tokens"].abs().sum() > 0
    assert g["qformer.layers.0.cross_attn.kv.weight"].abs().sum() > 0
    for name, grad in g.items():
        if name.startswith(untouched):
            assert grad is None or grad.abs().sum() == 0, f"{loss} should not reach {name}"


@pytest.mark.parametrize("preset", ["tiny-random", "tiny-random-t5"])
def test_stage2_reaches_queries_and_projection_only(preset, photos):
    model = build(preset).train()
    pixels, _ = model.load_images(photos)
    losses_for(model, pixels, TEXTS, stage=2)["loss"].backward()
    for name, grad in grads(model).items():
        if name.startswith(("vision.", "lm.")):
            assert grad is None, f"frozen {name} got a gradient"
            continue
        query_path = name.startswith(("projection.", "qformer.query_tokens", "qformer.embed_norm")) or any(
            part in name for part in (".self_attn.", ".cross_attn.", ".query_ffn.")
        )
        if query_path:
            assert grad is not None and grad.abs().sum() > 0, f"stage 2 gave {name} no gradient"


def test_frozen_weights_are_bit_identical_after_training(photos):
    model = build().train()
    before = frozen_state(model)
    bridge_before = model.qformer.query_tokens.detach().clone()
    # weight decay on every parameter: frozen ones must still not move
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    pixels, _ = model.load_images(photos)
    for stage in (1, 2, 1, 2):
        optimizer.zero_grad()
        losses_for(model, pixels, TEXTS, stage=stage)["loss"].backward()
        optimizer.step()
    for key, value in frozen_state(model).items():
        assert torch.equal(value, before[key]), f"frozen {key} changed"
    assert not torch.equal(model.qformer.query_tokens, bridge_before)


def test_stage1_loss_decreases_when_overfitting(photos):
    torch.manual_seed(0)
    model = build(qformer={"dropout": 0.0}).train()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    pixels, _ = model.load_images(photos)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = losses_for(model, pixels, TEXTS, stage=1)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_stage1_needs_two_pairs(cat):
    model = build()
    pixels, _ = model.load_images([cat])
    with pytest.raises(ValueError, match="at least 2 image-text pairs"):
        losses_for(model, pixels, ["a cat"], stage=1)
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        losses_for(model, pixels, ["a cat"], stage=3)
