"""Stage-2 labels: only the target tokens (and their EOS) are scored; prompt, prefix and padding are not."""

import pytest
import torch
import torch.nn.functional as F

from .conftest import build


def reference_loss(model, prefix, prompt, target):
    """Token-level cross-entropy of target + EOS after [prefix; prompt], written out by hand."""
    lm = model.lm
    prompt_ids = model.processor.prompt_ids([prompt])[0]
    target_ids = model.processor.target_ids([prompt], [target])[0]
    ids = torch.tensor([prompt_ids + target_ids])
    embeds = torch.cat([prefix, lm.model.get_input_embeddings()(ids)], dim=1)
    if lm.kind == "seq2seq":
        encoder = torch.cat([prefix, lm.model.get_input_embeddings()(torch.tensor([prompt_ids]))], dim=1)
        logits = lm.model(inputs_embeds=encoder, labels=torch.tensor([target_ids])).logits[0]
        return F.cross_entropy(logits, torch.tensor(target_ids), reduction="sum"), len(target_ids)
    logits = lm.model(inputs_embeds=embeds).logits[0]
    start = prefix.shape[1] + len(prompt_ids)
    predicted = logits[start - 1 : start - 1 + len(target_ids)]
    return F.cross_entropy(predicted, torch.tensor(target_ids), reduction="sum"), len(target_ids)


@pytest.mark.parametrize("preset", ["tiny-random", "tiny-random-t5"])
def test_padded_batch_loss_is_the_token_mean_of_its_rows(preset, cat, astronaut):
    model = build(preset).eval()
    pixels, _ = model.load_images([cat, astronaut])
    prefix = model.visual_prompt(pixels)
    prompts, targets = ["Question: what is it? Answer:", "a"], ["a cat", "person in a space suit"]
    with torch.no_grad():
        batch_loss = model.lm.loss(prefix, **model.processor.lm_training(prompts, targets))
        sums, counts = zip(*(reference_loss(model, prefix[i : i + 1], prompts[i], targets[i]) for i in range(2)))
    torch.testing.assert_close(batch_loss, sum(sums) / sum(counts), rtol=1e-5, atol=1e-5)


def test_prompt_tokens_are_not_scored(cat):
    model = build().eval()
    pixels, _ = model.load_images([cat])
    prefix = model.visual_prompt(pixels)
    with torch.no_grad():
        total, count = reference_loss(model, prefix, "some prompt", "x")
        loss = model.lm.loss(prefix, **model.processor.lm_training(["some prompt"], ["x"]))
    assert count == 3  # byte-level: " ", "x" and EOS
    torch.testing.assert_close(loss, total / count, rtol=1e-5, atol=1e-5)
