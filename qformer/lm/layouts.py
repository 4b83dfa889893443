"""Where the visual prefix goes in a language model's input: one strategy per kind of LM.

P = visual prefix (the projected queries), p = prompt tokens, t = target tokens, _ = padding:
- causal, training:    [P p t </s> _ _]  labels only on t and </s>
- causal, generation:  [_ _ P p]         left-padded, so every row's next token is at the end
- seq2seq:             encoder [P p _], decoder t </s>

A layout works on token ids (for the processor, in DataLoader workers) and on embeddings (for the
frozen LM); it holds no weights, so it pickles.
"""

from __future__ import annotations

import torch
from torch import nn

from .tokenizers import pad_rows

IGNORE_INDEX = -100


def left_pad(embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's padding to the front, keeping the order of its real positions."""
    order = torch.argsort(mask, dim=1, stable=True)  # zeros (padding) first
    embeds = torch.gather(embeds, 1, order[..., None].expand_as(embeds))
    return embeds, torch.gather(mask, 1, order)


def with_prefix(prefix: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`[prefix; embeds]` and its mask: `(B, P + T, D)`, `(B, P + T)`."""
    ones = torch.ones(prefix.shape[:2], dtype=mask.dtype, device=mask.device)
    return torch.cat([prefix.to(embeds.dtype), embeds], dim=1), torch.cat([ones, mask], dim=1)


class CausalLayout:
    """Decoder-only LMs (OPT, Llama, Gemma, Qwen, GPT-2): prefix, prompt and target in one sequence."""

    kind = "causal"
    static_greedy = True  # qformer.lm.decoding's loop handles decoder-only models

    def prompt_rows(self, rows: list[list[int]], eos: int | None) -> list[list[int]]:
        # a trailing EOS would end the text before the answer
        return [r[:-1] if r and r[-1] == eos else r for r in rows]

    def training_ids(self, prompts: list[list[int]], targets: list[list[int]], pad: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`input_ids`, `attention_mask`, `labels` `(B, T)`: labels only on the targets."""
        rows = [p + t for p, t in zip(prompts, targets)]
        labels = pad_rows([[IGNORE_INDEX] * len(p) + t for p, t in zip(prompts, targets)], IGNORE_INDEX)
        return pad_rows(rows, pad), pad_rows([[1] * len(r) for r in rows], 0), labels

    def generation_ids(self, prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_rows(prompts, pad, left=True), pad_rows([[1] * len(r) for r in prompts], 0, left=True)

    def loss(self, model: nn.Module, prefix: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor,
             labels: torch.Tensor) -> torch.Tensor:
        embeds, mask = with_prefix(prefix, embeds, mask)
        ignored = torch.full(prefix.shape[:2], IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
        labels = torch.cat([ignored, labels], dim=1)
        logits = model(inputs_embeds=embeds, attention_mask=mask).logits
        return nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(),
                                           ignore_index=IGNORE_INDEX)

    def generation_inputs(self, prefix: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        return left_pad(*with_prefix(prefix, embeds, mask))  # the prefix joins each row's real tokens

    def new_tokens(self, output: torch.Tensor) -> torch.Tensor:
        return output  # generate from embeddings returns only the new tokens

    def continuation(self, output: torch.Tensor, prompt_length: int) -> torch.Tensor:
        return output[:, prompt_length:]  # generate from ids returns the prompt and what follows


class Seq2SeqLayout:
    """Encoder-decoder LMs (T5): prefix and prompt into the encoder, the target from the decoder."""

    kind = "seq2seq"
    static_greedy = False

    def prompt_rows(self, rows: list[list[int]], eos: int | None) -> list[list[int]]:
        return rows

    def training_ids(self, prompts: list[list[int]], targets: list[list[int]], pad: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return pad_rows(prompts, pad), pad_rows([[1] * len(r) for r in prompts], 0), pad_rows(targets, IGNORE_INDEX)

    def generation_ids(self, prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_rows(prompts, pad), pad_rows([[1] * len(r) for r in prompts], 0)

    def loss(self, model: nn.Module, prefix: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor,
             labels: torch.Tensor) -> torch.Tensor:
        embeds, mask = with_prefix(prefix, embeds, mask)
        return model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss

    def generation_inputs(self, prefix: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        return with_prefix(prefix, embeds, mask)

    def new_tokens(self, output: torch.Tensor) -> torch.Tensor:
        return output[:, 1:]  # drop the decoder start token

    def continuation(self, output: torch.Tensor, prompt_length: int) -> torch.Tensor:
        return output[:, 1:]  # the decoder's output holds no prompt


LAYOUTS = {"causal": CausalLayout(), "seq2seq": Seq2SeqLayout()}
