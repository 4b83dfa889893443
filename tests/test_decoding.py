"""The static-cache greedy loop gives `generate`'s tokens: every causal family, padding, early ends."""

import pytest
import torch

from qformer.lm.decoding import StaticGreedyDecoder, is_plain_greedy

from .test_generation import CAUSAL_LMS, QUESTIONS, sharpen, with_lm


def prompt_embeds(model, photos):
    """Left-padded `[visual prompt; question]` rows of three different lengths."""
    pixels, _ = model.processor.images(photos)
    ids = model.processor.lm_generation(model.processor.question_prompts(QUESTIONS))
    return model.lm.embed_with_prefix(model.visual_prompt(pixels), ids["input_ids"], ids["attention_mask"])


def reference(lm, embeds, mask, **settings):
    return lm.model.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False, num_beams=1,
                             pad_token_id=0, **settings)


@pytest.mark.parametrize("name", CAUSAL_LMS)
def test_same_tokens_as_generate(name, photos):
    model = sharpen(with_lm(name))
    embeds, mask = prompt_embeds(model, photos)
    decode = StaticGreedyDecoder(model.lm.model)
    full = reference(model.lm, embeds, mask, max_new_tokens=12, min_new_tokens=12, eos_token_id=1)
    assert torch.equal(decode(embeds, mask, max_new_tokens=12, min_new_tokens=12, eos_token_id=1, pad_token_id=0), full)
    # declare tokens the model does emit to be ends of text
    ends = [int(full[0, 2]), int(full[1, 5])]
    expected = reference(model.lm, embeds, mask, max_new_tokens=12, eos_token_id=ends)
    assert torch.equal(decode(embeds, mask, max_new_tokens=12, eos_token_id=ends, pad_token_id=0), expected)
    # min_new_tokens holds the ends back
    held = reference(model.lm, embeds, mask, max_new_tokens=12, min_new_tokens=6, eos_token_id=ends)
    ours = decode(embeds, mask, max_new_tokens=12, min_new_tokens=6, eos_token_id=ends, pad_token_id=0)
    assert torch.equal(ours, held)


@pytest.mark.parametrize("name", ["llama", "opt"])
def test_rows_that_end_early_are_padded_and_the_loop_stops(name, photos):
    model = sharpen(with_lm(name))
    embeds, mask = prompt_embeds(model, photos)
    full = reference(model.lm, embeds, mask, max_new_tokens=20, min_new_tokens=20, eos_token_id=1)
    ends = [int(full[0, 1]), int(full[1, 3]), int(full[2, 4])]
    expected = reference(model.lm, embeds, mask, max_new_tokens=20, eos_token_id=ends)
    assert expected.shape[1] < 20 and (expected == 0).any(), "rows should end at different steps"
    ours = StaticGreedyDecoder(model.lm.model, check_every=2)(embeds, mask, max_new_tokens=20, eos_token_id=ends,
                                                            pad_token_id=0)
    assert torch.equal(ours, expected)


def test_cache_is_reused_and_reset(photos):
    model = sharpen(with_lm("llama"))
    embeds, mask = prompt_embeds(model, photos)
    decode = StaticGreedyDecoder(model.lm.model)
    settings = dict(max_new_tokens=10, eos_token_id=1, pad_token_id=0)
    first = decode(embeds, mask, **settings)
    cache = decode.cache
    assert torch.equal(decode(embeds, mask, **settings), first) and decode.cache is cache
    one = decode(embeds[1:2], mask[1:2], **settings)  # another batch size: another cache
    assert torch.equal(one[0, : first.shape[1]], first[1, : one.shape[1]])
    with pytest.raises(ValueError, match="max_new_tokens"):
        decode(embeds, mask, **{**settings, "max_new_tokens": 0})


def test_compiled_step_gives_the_same_tokens(photos):
    model = sharpen(with_lm("opt"))
    embeds, mask = prompt_embeds(model, photos)
    settings = dict(max_new_tokens=8, min_new_tokens=8, eos_token_id=1, pad_token_id=0)
    eager = StaticGreedyDecoder(model.lm.model, compile_step=False)(embeds, mask, **settings)
    assert torch.equal(StaticGreedyDecoder(model.lm.model, compile_step=True)(embeds, mask, **settings), eager)


def test_only_plain_greedy_takes_the_fast_path(photos):
    model = sharpen(with_lm("llama"))
    lm = model.lm.model
    assert is_plain_greedy(lm, {"max_new_tokens": 5, "do_sample": False, "cache_implementation": "static"})
    assert not is_plain_greedy(lm, {"do_sample": True})
    assert not is_plain_greedy(lm, {"num_beams": 3})
    assert not is_plain_greedy(lm, {"repetition_penalty": 1.3})
    lm.generation_config.min_new_tokens = 4  # the model's own default applies unless the request sets one
    assert not is_plain_greedy(lm, {"max_new_tokens": 5})
    assert is_plain_greedy(lm, {"max_new_tokens": 5, "min_new_tokens": 0})
    lm.generation_config.min_new_tokens = None
    lm.generation_config.repetition_penalty = 1.3  # a model's own config can add processors too
    assert not is_plain_greedy(lm, {"max_new_tokens": 5})
    # through the public API: the static path falls back to generate, which applies the penalty
    static = model.ask(photos, QUESTIONS, cache_implementation="static", max_new_tokens=8)
    assert static == model.ask(photos, QUESTIONS, max_new_tokens=8)


def test_captions_through_the_static_path_match(photos):
    model = sharpen(with_lm("qwen2"))
    assert model.caption(photos, cache_implementation="static", max_new_tokens=10) == model.caption(
        photos, max_new_tokens=10)
