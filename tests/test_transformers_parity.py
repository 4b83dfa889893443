"""Parity with transformers' own BLIP-2: tiny random checkpoints built with its classes, no download."""

import pytest
import torch
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    BlipImageProcessor,
    ByT5Tokenizer,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

import qformer
from qformer.bridge.checkpoint import CheckpointError
from qformer.bridge.convert import _load_pairs, convert_from_transformers, convert_to_transformers, key_pairs

IMAGE_TOKEN_ID = 384  # "<image>", added to the byte tokenizer's 384 tokens; the LMs have spare rows
Q = 4
TEXT_CONFIGS = {
    "opt": {"model_type": "opt", "vocab_size": 400, "hidden_size": 32, "ffn_dim": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "word_embed_proj_dim": 32, "init_std": 0.2,
            "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2},
    "t5": {"model_type": "t5", "vocab_size": 400, "d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 2,
           "num_decoder_layers": 2, "num_heads": 2, "initializer_factor": 10.0,
           "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0},
}
PROMPTS = ["Question: what is this? Answer:", "a", "Question: and who is standing on the left? Answer:"]


def tiny_blip2(text: str, seed: int = 0) -> Blip2ForConditionalGeneration:
    torch.manual_seed(seed)
    config = Blip2Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 224, "patch_size": 32},
        qformer_config={"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64,
                        "cross_attention_frequency": 2, "encoder_hidden_size": 32},
        text_config=TEXT_CONFIGS[text],
        num_query_tokens=Q,
        image_token_index=IMAGE_TOKEN_ID,
    )
    model = Blip2ForConditionalGeneration(config).eval()
    with torch.no_grad():  # random init is near-uniform; spread it so greedy choices are clear-cut
        model.query_tokens.normal_(std=1.0)
        model.language_projection.weight.mul_(20)
    return model


def byte_tokenizer() -> ByT5Tokenizer:
    tokenizer = ByT5Tokenizer()
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    assert tokenizer.convert_tokens_to_ids("<image>") == IMAGE_TOKEN_ID
    return tokenizer


def blip2_processor() -> BlipImageProcessor:
    return BlipImageProcessor(size={"height": 224, "width": 224}, image_mean=OPENAI_CLIP_MEAN,
                              image_std=OPENAI_CLIP_STD, resample=3)


@pytest.fixture(scope="module", params=["opt", "t5"])
def pair(request, tmp_path_factory):
    """(transformers model, qformer model imported from its checkpoint folder)."""
    source = tmp_path_factory.mktemp(f"hf-{request.param}")
    hf = tiny_blip2(request.param)
    hf.save_pretrained(source)
    byte_tokenizer().save_pretrained(source)
    blip2_processor().save_pretrained(source)
    out = tmp_path_factory.mktemp(f"ours-{request.param}")
    convert_from_transformers(str(source), out)
    return hf, qformer.Blip2.from_pretrained(out).eval()


def hf_inputs(ours, prompts):
    """What Blip2Processor gives recent transformers: Q image tokens, then the prompt; left-padded."""
    rows = [[IMAGE_TOKEN_ID] * Q + r for r in ours.processor.prompt_ids(prompts)]
    width = max(len(r) for r in rows)
    side = "left" if ours.lm.kind == "causal" else "right"
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, span], mask[i, span] = torch.tensor(r), 1
    return ids, mask


def test_preprocessing_matches_blip2_processor(cat, astronaut):
    ours = qformer.create_model("tiny-random", vision={
        "backend": "transformers", "model_name": "Blip2VisionModel", "image_size": 224,
        "model_kwargs": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "image_size": 224, "patch_size": 32}})
    expected = blip2_processor()([cat, astronaut], return_tensors="pt")["pixel_values"]
    got = ours.vision.preprocess([cat, astronaut])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_query_outputs_and_logits_match(pair, cat, astronaut):
    hf, ours = pair
    images = [cat, astronaut]
    pixels = ours.vision.preprocess(images)
    with torch.no_grad():
        image_embeds = hf.vision_model(pixels).last_hidden_state
        expected_queries = hf.qformer(query_embeds=hf.query_tokens.expand(2, -1, -1),
                                      encoder_hidden_states=image_embeds).last_hidden_state
        image_tokens = ours.encode_images(pixels)
        torch.testing.assert_close(image_tokens, image_embeds, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.query_outputs(image_tokens), expected_queries, rtol=1e-5, atol=1e-5)

        ids, mask = hf_inputs(ours, PROMPTS[:2])
        if ours.lm.kind == "causal":
            expected = hf(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits
            embeds, our_mask = ours.lm.embed_with_prefix(ours.visual_prompt(pixels),
                                                         **ours.processor.lm_generation(PROMPTS[:2]))
            got = ours.lm.model(inputs_embeds=embeds, attention_mask=our_mask).logits
            torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], rtol=1e-5, atol=1e-5)
        else:
            decoder = torch.tensor([[0, 5, 9], [0, 7, 7]])
            expected = hf(pixel_values=pixels, input_ids=ids, attention_mask=mask, decoder_input_ids=decoder).logits
            embeds, our_mask = ours.lm.embed_with_prefix(ours.visual_prompt(pixels),
                                                         **ours.processor.lm_generation(PROMPTS[:2]))
            got = ours.lm.model(inputs_embeds=embeds, attention_mask=our_mask, decoder_input_ids=decoder).logits
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def hf_generate(hf, ours, pixels, prompts, new_tokens=8):
    ids, mask = hf_inputs(ours, prompts)
    out = hf.generate(pixel_values=pixels, input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                      do_sample=False, num_beams=1, pad_token_id=0, eos_token_id=1)
    return out[:, ids.shape[1]:] if ours.lm.kind == "causal" else out[:, 1:]


def same_tokens(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Token-identical up to the first EOS (what follows is padding either way)."""
    def trim(row):
        row = row.tolist()
        return row[: row.index(1) + 1] if 1 in row else row
    return [trim(r) for r in a] == [trim(r) for r in b]


def test_greedy_generation_is_token_identical(pair, photos):
    hf, ours = pair
    pixels = ours.vision.preprocess(photos)
    with torch.no_grad():
        for i in range(3):  # one at a time
            expected = hf_generate(hf, ours, pixels[i : i + 1], PROMPTS[i : i + 1])
            got = ours.lm.generate(ours.visual_prompt(pixels[i : i + 1]),
                                   **ours.processor.lm_generation(PROMPTS[i : i + 1]), max_new_tokens=8)
            assert same_tokens(got, expected), i
        expected = hf_generate(hf, ours, pixels, PROMPTS)  # batched, prompts of different lengths
        got = ours.lm.generate(ours.visual_prompt(pixels), **ours.processor.lm_generation(PROMPTS), max_new_tokens=8)
        assert same_tokens(got, expected)
        assert len({tuple(r.tolist()) for r in got}) > 1, "the three rows should differ"


def test_export_round_trip(pair, tmp_path, photos):
    hf, ours = pair
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    exported = convert_to_transformers(ours, tmp_path)
    assert all(torch.equal(v, before[k]) for k, v in ours.state_dict().items()), "export must not change the model"
    reloaded = Blip2ForConditionalGeneration.from_pretrained(tmp_path).eval()
    pixels = ours.vision.preprocess(photos)
    with torch.no_grad():
        expected = ours.lm.generate(ours.visual_prompt(pixels), **ours.processor.lm_generation(PROMPTS),
                                    max_new_tokens=8)
        assert same_tokens(hf_generate(reloaded, ours, pixels, PROMPTS), expected)
    assert exported.config.num_query_tokens == Q and exported.config.image_token_index == IMAGE_TOKEN_ID
    processor = Blip2Processor.from_pretrained(tmp_path)
    encoded = processor(images=photos, text=PROMPTS, return_tensors="pt", padding=True)
    torch.testing.assert_close(encoded["pixel_values"], pixels, rtol=0, atol=1e-5)
    assert (encoded["input_ids"][:, :Q] == IMAGE_TOKEN_ID).all(), "the processor expands Q image tokens"


def test_mismatched_checkpoint_is_refused(tmp_path):
    hf = tiny_blip2("opt")
    state = hf.state_dict()
    state["qformer.encoder.layer.0.crossattention.attention.key.weight"] = torch.zeros(32, 48)
    hf.save_pretrained(tmp_path, state_dict=state)
    byte_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="could not load it as Blip2ForConditionalGeneration"):
        convert_from_transformers(str(tmp_path), tmp_path / "out")


def test_bridge_key_map_names_what_is_missing_or_misshapen():
    hf = tiny_blip2("opt")
    ours = qformer.create_model("tiny-random", lm=None, qformer={"num_layers": 3, "cross_attention_freq": 2})
    state = {k: v for k, v in hf.state_dict().items() if k.startswith(("qformer.", "query_tokens"))}
    pairs = {k: v for k, v in key_pairs(ours.config.qformer, with_text_ffn=False).items() if "projection" not in k}
    broken = dict(state)
    broken.pop("qformer.encoder.layer.2.crossattention.output.dense.bias")
    with pytest.raises(CheckpointError, match="missing .*layer.2.crossattention.output.dense.bias"):
        _load_pairs(ours, broken, pairs, "src")
    ours = qformer.create_model("tiny-random", lm=None, qformer={"num_layers": 3, "cross_attention_freq": 2,
                                                                 "num_queries": 5})
    with pytest.raises(CheckpointError, match=r"query_tokens has shape \(1, 4, 32\), but qformer's "
                                              r"qformer.query_tokens needs \(1, 5, 32\)"):
        _load_pairs(ours, state, pairs, "src")


def test_export_needs_a_blip2_vision_tower():
    with pytest.raises(ValueError, match="needs a Blip2VisionModel image encoder; this model uses timm"):
        convert_to_transformers(qformer.create_model("tiny-random"), "/tmp/never-written")


def test_convert_command_both_ways(tmp_path, cat):
    from qformer.cli.main import main

    source = tmp_path / "hf"
    tiny_blip2("opt").save_pretrained(source)
    byte_tokenizer().save_pretrained(source)
    assert main(["convert", "--from-transformers", str(source), "--out", str(tmp_path / "ours")]) == 0
    assert main(["convert", "--to-transformers", str(tmp_path / "ours"), "--out", str(tmp_path / "back")]) == 0
    moved = tmp_path / "moved"
    (tmp_path / "ours").rename(moved)  # ./vision and ./lm are relative: the folder can move
    ours = qformer.Blip2.from_pretrained(moved).eval()
    back = Blip2ForConditionalGeneration.from_pretrained(tmp_path / "back").eval()
    pixels = ours.vision.preprocess([cat])
    with torch.no_grad():
        assert same_tokens(hf_generate(back, ours, pixels, PROMPTS[:1]),
                           ours.lm.generate(ours.visual_prompt(pixels), **ours.processor.lm_generation(PROMPTS[:1]),
                                            max_new_tokens=8))
    assert main(["convert", "--to-transformers", "tiny-random", "--out", str(tmp_path / "x")]) == 1
    # the same folder served as a hub repo from a cache in the hub's layout: backbones come along
    repo = tmp_path / "cache" / "models--someone--blip2-tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("c0ffee")
    (repo / "snapshots").mkdir()
    moved.rename(repo / "snapshots" / "c0ffee")
    from_hub = qformer.Blip2.from_pretrained("someone/blip2-tiny", cache_dir=tmp_path / "cache").eval()
    torch.testing.assert_close(from_hub.visual_prompt(pixels), ours.visual_prompt(pixels), rtol=0, atol=0)


def test_processor_token_ids_new_and_old_style(pair, photos):
    """Recent processors put Q <image> tokens in input_ids; older ones leave them out. Both give the
    same tokens as transformers, and as qformer's own prompt path."""
    hf, ours = pair
    pixels = ours.vision.preprocess(photos)
    expected = hf_generate(hf, ours, pixels, PROMPTS)
    new_style, mask = hf_inputs(ours, PROMPTS)
    old_style, old_mask = new_style[:, Q:], mask[:, Q:]
    if ours.lm.kind == "causal":  # the image tokens sat after the left padding; drop them from each row
        old_style = torch.stack([torch.cat([r[m == 0], r[m == 1][Q:]]) for r, m in zip(new_style, mask)])
        old_mask = torch.stack([torch.cat([m[m == 0], m[m == 1][Q:]]) for m in mask])
    with torch.no_grad():
        assert same_tokens(ours.generate(pixels, new_style, mask, max_new_tokens=8), expected)
        assert same_tokens(ours.generate(pixels, old_style, old_mask, max_new_tokens=8), expected)
    one_short = new_style.clone()
    one_short[one_short == IMAGE_TOKEN_ID] = torch.tensor([5] + [IMAGE_TOKEN_ID] * (3 * Q - 1))
    with pytest.raises(ValueError, match=rf"needs {Q} <image> tokens \(one per query\); found \[{Q - 1}, {Q}, {Q}\]"):
        ours.generate(pixels, one_short, mask)
