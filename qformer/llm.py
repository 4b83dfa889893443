"""The frozen language model: a transformers causal LM (OPT, Llama, Gemma, Qwen, GPT-2...) or
seq2seq LM (T5), fed the projected queries as a soft visual prompt in front of the text prompt.

Layouts (P = visual prefix, p = prompt tokens, t = target tokens, _ = padding):
- causal, training:    [P p t </s> _ _]  labels only on t and </s>
- causal, generation:  [_ _ P p]         left-padded, so every row's next token is at the end
- seq2seq:             encoder [P p _], decoder t </s>
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

from .config import LMConfig
from .decoding import DECODER_ARGS, StaticGreedyDecoder, is_plain_greedy
from .encoders.base import DTYPES
from .gguf_cache import resolve_lm_source
from .tokenizers import load_tokenizer, pad_rows
from .weights import load_safetensors_model

IGNORE_INDEX = -100
IMAGE_TOKEN = "<image>"


class FrozenLM(nn.Module):
    """A transformers LM and its tokenizer that never train; gradients still flow to the prefix."""

    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = config
        dtype = DTYPES[config.dtype]
        source = None if config.random_config is not None else resolve_lm_source(config)
        if source is None:
            model_config = AutoConfig.for_model(**config.random_config)
        else:
            model_config = AutoConfig.from_pretrained(source)
        self.kind = config.kind or ("seq2seq" if model_config.is_encoder_decoder else "causal")
        auto = AutoModelForSeq2SeqLM if self.kind == "seq2seq" else AutoModelForCausalLM
        if source is None:
            with torch.random.fork_rng(devices=[]):  # the config's seed fixes the weights
                torch.manual_seed(config.seed)
                self.model = auto.from_config(model_config, dtype=dtype)
        else:
            self.model = load_safetensors_model(auto, source, "lm.name_or_path", dtype=dtype)
        tokenizer_name = config.tokenizer or source
        if tokenizer_name is None:
            raise ValueError("lm.tokenizer is needed when the LM comes from lm.random_config")
        self.tokenizer = load_tokenizer(tokenizer_name)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        vocab = self.model.get_input_embeddings().num_embeddings
        if len(self.tokenizer) > vocab:
            raise ValueError(
                f"lm tokenizer {tokenizer_name!r} has {len(self.tokenizer)} tokens but the model's "
                f"embedding has {vocab} rows; use the tokenizer that belongs to the model"
            )
        self._decoder: StaticGreedyDecoder | None = None  # made at the first static-cache greedy request
        self.freeze()

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def freeze(self) -> FrozenLM:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> FrozenLM:
        return super().train(False)  # a frozen LM keeps eval mode (no dropout) under a training parent

    # --- tokenization -------------------------------------------------------------------------

    def prompt_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt as an input prefix: BOS if the tokenizer adds one, never a trailing EOS
        on causal models (it would end the text before the answer)."""
        # split_special_tokens: "<|im_end|>" typed in a question is text, never the model's control token
        rows = self.tokenizer(list(prompts), add_special_tokens=True, split_special_tokens=True)["input_ids"]
        eos = self.tokenizer.eos_token_id
        if self.kind == "causal":
            rows = [r[:-1] if r and r[-1] == eos and len(r) > 0 else r for r in rows]
        too_long = [i for i, r in enumerate(rows) if len(r) > self.config.max_prompt_tokens]
        if too_long:
            i = too_long[0]
            raise ValueError(
                f"prompt {i} is {len(rows[i])} tokens long, over lm.max_prompt_tokens="
                f"{self.config.max_prompt_tokens}: {prompts[i][:60]!r}..."
            )
        return rows

    def target_ids(self, prompts: Sequence[str], targets: Sequence[str]) -> list[list[int]]:
        """Target ids ending in EOS; a space separates them from a non-empty prompt."""
        texts = [(" " + t if p and not p.endswith(" ") else t) for p, t in zip(prompts, targets)]
        rows = self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return [r + [self.tokenizer.eos_token_id] for r in rows]

    def _embed_rows(self, prefix: torch.Tensor, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """`[prefix; rows]` as embeddings `(B, P + T, D)` and mask, right-padded."""
        ids = pad_rows(rows, self.tokenizer.pad_token_id).to(prefix.device)
        mask = pad_rows([[1] * len(r) for r in rows], 0).to(prefix.device)
        embeds = torch.cat([prefix.to(self.dtype), self.model.get_input_embeddings()(ids)], dim=1)
        prefix_mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        return embeds, torch.cat([prefix_mask, mask], dim=1)

    # --- training -----------------------------------------------------------------------------

    def loss(self, prefix: torch.Tensor, prompts: Sequence[str], targets: Sequence[str]) -> torch.Tensor:
        """Mean cross-entropy of the targets given `[prefix; prompt]`; prompt and padding are not scored."""
        prompt_rows = self.prompt_ids(prompts)
        target_rows = self.target_ids(prompts, targets)
        if self.kind == "seq2seq":
            embeds, mask = self._embed_rows(prefix, prompt_rows)
            labels = pad_rows(target_rows, IGNORE_INDEX).to(prefix.device)
            out = self.model(inputs_embeds=embeds, attention_mask=mask, labels=labels)
            return out.loss
        rows = [p + t for p, t in zip(prompt_rows, target_rows)]
        embeds, mask = self._embed_rows(prefix, rows)
        labels = torch.full(mask.shape, IGNORE_INDEX, dtype=torch.long, device=prefix.device)
        start = prefix.shape[1]
        for i, (p, t) in enumerate(zip(prompt_rows, target_rows)):
            labels[i, start + len(p) : start + len(p) + len(t)] = torch.tensor(t, device=prefix.device)
        logits = self.model(inputs_embeds=embeds, attention_mask=mask).logits
        return nn.functional.cross_entropy(
            logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
        )

    # --- generation ---------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prefix: torch.Tensor, prompts: Sequence[str], **generation: Any) -> list[str]:
        """Decoded continuations of `[prefix; prompt]`. `generation` goes to transformers' `generate`
        (max_new_tokens, num_beams, do_sample, temperature, top_p, ...)."""
        new_tokens = self.generate_ids(prefix, prompts, **generation)
        return [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    @property
    def image_token_id(self) -> int | None:
        """The `<image>` placeholder id, when the tokenizer has one (BLIP-2 processors add it)."""
        return self.tokenizer.get_vocab().get(IMAGE_TOKEN)

    def embed_with_prefix(
        self, prefix: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings for token ids from a processor. Recent BLIP-2 processors put Q `<image>` tokens
        in `input_ids`: the prefix replaces them. Older ones don't: the prefix goes in front."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeds = self.model.get_input_embeddings()(input_ids)
        slots = input_ids == self.image_token_id if self.image_token_id is not None else None
        if slots is not None and slots.any():
            counts = slots.sum(dim=1)
            if (counts != prefix.shape[1]).any():
                raise ValueError(
                    f"each row of input_ids needs {prefix.shape[1]} {IMAGE_TOKEN} tokens (one per query); "
                    f"found {counts.tolist()}"
                )
            return embeds.masked_scatter(slots[..., None], prefix.to(embeds.dtype)), attention_mask
        embeds = torch.cat([prefix.to(embeds.dtype), embeds], dim=1)
        ones = torch.ones(prefix.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
        mask = torch.cat([ones, attention_mask], dim=1)
        return left_pad(embeds, mask) if self.kind == "causal" else (embeds, mask)

    @torch.no_grad()
    def generate_ids(self, prefix: torch.Tensor, prompts: Sequence[str], **generation: Any) -> torch.Tensor:
        """The new token ids only `(B, T_new)`, padded after EOS with the pad token."""
        embeds, mask = self._embed_rows(prefix, self.prompt_ids(prompts))
        if self.kind == "causal":
            embeds, mask = left_pad(embeds, mask)
        return self.generate_from_embeds(embeds, mask, **generation)

    @torch.no_grad()
    def generate_from_embeds(self, embeds: torch.Tensor, mask: torch.Tensor, **generation: Any) -> torch.Tensor:
        settings = {
            "max_new_tokens": 30,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
            **generation,
        }
        if not settings.get("do_sample"):
            # the model's own generation config may carry sampling settings; greedy/beam ignores them
            settings.setdefault("do_sample", False)
            settings.update({k: None for k in ("temperature", "top_p", "top_k") if k not in generation})
        static = settings.get("cache_implementation") == "static"
        if static and self.kind == "causal" and is_plain_greedy(self.model, settings):
            return self._static_greedy(embeds, mask, **{k: settings[k] for k in DECODER_ARGS if k in settings})
        output = self.model.generate(inputs_embeds=embeds, attention_mask=mask, **settings)
        if self.kind == "seq2seq":
            output = output[:, 1:]  # drop the decoder start token
        return output

    def _static_greedy(self, embeds: torch.Tensor, mask: torch.Tensor, **settings: Any) -> torch.Tensor:
        """Our own greedy loop (`qformer.decoding`): same tokens as `generate`, one compiled step per token."""
        if self._decoder is None or self._decoder.device != embeds.device:  # compiled on CUDA only: a move decides anew
            self._decoder = StaticGreedyDecoder(self.model)
        return self._decoder(embeds, mask, **settings)


def left_pad(embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's padding to the front, keeping the order of its real positions."""
    order = torch.argsort(mask, dim=1, stable=True)  # zeros (padding) first
    embeds = torch.gather(embeds, 1, order[..., None].expand_as(embeds))
    return embeds, torch.gather(mask, 1, order)

