"""Captions and answers: deterministic greedy, batched = one at a time, beams and sampling, bad input."""

import pytest
import torch

import qformer
from qformer.processing.images import ImageLoadError

from .conftest import build, losses_for, random_photo

CAUSAL_LMS = {
    "llama": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "num_key_value_heads": 1},
    "opt": {"model_type": "opt", "hidden_size": 32, "ffn_dim": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "word_embed_proj_dim": 32},
    "gpt2": {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2},
    "qwen2": {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "num_key_value_heads": 1},
    "gemma3_text": {"model_type": "gemma3_text", "hidden_size": 32, "intermediate_size": 64,
                    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16},
}
# large init: tiny random LMs otherwise repeat one token whatever the input
BYTE_VOCAB = {"vocab_size": 384, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": None,
              "initializer_range": 0.2, "init_std": 0.2}
QUESTIONS = ["what?", "what animal is sitting on the rug here?", "is it a cup of coffee or tea?"]


def with_lm(name):
    return build(lm={"random_config": {**CAUSAL_LMS[name], **BYTE_VOCAB}, "tokenizer": "byt5"}).eval()


def sharpen(model):
    """Random tiny LMs are near-uniform; a larger soft prompt makes greedy choices clear-cut."""
    with torch.no_grad():
        model.projection.weight.mul_(20)
    return model


@pytest.mark.parametrize("preset", ["tiny-random", "tiny-random-t5"])
def test_greedy_is_deterministic_and_batching_changes_nothing(preset, photos):
    model = sharpen(build(preset).eval())
    batched = model.ask(photos, QUESTIONS, max_new_tokens=8)
    assert batched == model.ask(photos, QUESTIONS, max_new_tokens=8)
    one_by_one = [model.ask([p], [q], max_new_tokens=8)[0] for p, q in zip(photos, QUESTIONS)]
    assert batched == one_by_one
    assert len(set(batched)) > 1, "different images and questions should not all give one answer"


@pytest.mark.parametrize("name", CAUSAL_LMS)
def test_causal_lm_families(name, photos):
    model = sharpen(with_lm(name))
    batched = model.ask(photos, QUESTIONS, max_new_tokens=6)
    assert batched == [model.ask([p], [q], max_new_tokens=6)[0] for p, q in zip(photos, QUESTIONS)]
    pixels, _ = model.load_images(photos)
    assert torch.isfinite(losses_for(model, pixels, ["a", "bb", "ccc"], stage=2)["loss"])


@pytest.mark.parametrize("preset", ["tiny-random", "tiny-random-t5"])
def test_beam_search_and_sampling(preset, photos):
    model = sharpen(build(preset).eval())
    beams = model.caption(photos, num_beams=3, max_new_tokens=5)
    # the same beam search run by transformers on the same inputs
    pixels, _ = model.processor.images(photos)
    embeds, mask = model.lm.embed_with_prefix(model.visual_prompt(pixels),
                                              **model.processor.lm_generation([model.config.lm.prompt] * 3))
    tokenizer = model.lm.tokenizer
    raw = model.lm.model.generate(inputs_embeds=embeds, attention_mask=mask, num_beams=3, max_new_tokens=5,
                                  do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                  eos_token_id=tokenizer.eos_token_id)
    assert beams == model.processor.decode(model.lm.layout.new_tokens(raw))
    torch.manual_seed(0)
    first = model.caption(photos, do_sample=True, top_p=0.9, temperature=1.5, max_new_tokens=5)
    torch.manual_seed(0)
    assert model.caption(photos, do_sample=True, top_p=0.9, temperature=1.5, max_new_tokens=5) == first


def test_generation_stops_at_eos(cat):
    model = build().eval()
    lm = model.lm
    ids = model.processor.lm_generation([""])
    embeds, mask = lm.embed_with_prefix(model.visual_prompt(model.load_images([cat])[0]), **ids)
    raw = lm.model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=10, do_sample=False,
                            pad_token_id=lm.tokenizer.pad_token_id, eos_token_id=lm.tokenizer.eos_token_id)[0]
    assert len(raw) > 1
    first = lm.tokenizer.decode(raw[:1], skip_special_tokens=True).strip()
    assert model.caption([cat], prompt="",
                         max_new_tokens=10) == [lm.tokenizer.decode(raw, skip_special_tokens=True).strip()]
    # declare the first generated token to be the end of text: generation stops right after it
    assert model.caption([cat], prompt="", max_new_tokens=10, eos_token_id=int(raw[0])) == [first]


def test_one_bad_image_does_not_lose_the_others(tmp_path, cat, astronaut):
    model = build().eval()
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    good_only = model.caption([cat, astronaut], max_new_tokens=4)
    mixed = model.caption([cat, bad, astronaut], return_exceptions=True, max_new_tokens=4)
    assert isinstance(mixed[1], ImageLoadError) and "broken.jpg" in str(mixed[1])
    assert [mixed[0], mixed[2]] == good_only
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        model.caption([cat, bad])


def test_bad_requests_are_named(cat):
    model = build().eval()
    with pytest.raises(ValueError, match="empty batch of images"):
        model.caption([])
    with pytest.raises(ValueError, match="question 1 is empty"):
        model.ask([cat, cat], ["what?", "  "])
    with pytest.raises(ValueError, match="2 images but 3 questions"):
        model.ask([cat, cat], ["a?", "b?", "c?"])
    with pytest.raises(ValueError, match=r"prompt 0 is \d+ tokens long, over lm.max_prompt_tokens=128"):
        model.ask([cat], ["why " * 100])


def test_single_inputs_and_stage1_only_models(cat):
    model = build().eval()
    assert len(model.caption(cat, max_new_tokens=3)) == 1
    assert len(model.ask(random_photo(1), "what?", max_new_tokens=3)) == 1
    scorer = build(lm=None).eval()
    assert scorer.projection is None
    assert scorer.scores([cat, random_photo(2)], ["a", "b", "c"], method="itm").shape == (2, 3)
    with pytest.raises(ValueError, match="no language model"):
        scorer.caption([cat])
    with pytest.raises(ValueError, match="method must be 'itc' or 'itm'"):
        scorer.scores([cat], ["a"], method="clip")


def test_all_vision_backends_drive_the_bridge(photos):
    from .test_encoders import BACKENDS

    for name, (vision, _, _) in BACKENDS.items():
        torch.manual_seed(0)
        config = qformer.get_config("tiny-random").with_overrides(vision=vision.__dict__ | {"members": []})
        model = qformer.Blip2(config)
        pixels, _ = model.load_images(photos[:2])
        model.train()
        losses = losses_for(model, pixels, ["a cat", "a person"], stage=1)
        assert torch.isfinite(losses["loss"]), name
        assert len(model.eval().caption(photos[:2], max_new_tokens=2)) == 2, name
