"""Greedy decoding of a causal LM with a static KV cache and one compiled step per token.

transformers' `generate` wraps every token in Python work around the model: input preparation,
logits processors, a stopping check that waits for the GPU. With OPT-2.7B on an H100 its
static-cache path took 6 ms a token against a memory floor of about 2 ms. Here one function does
the whole step (forward, end-of-text suppression, argmax) and is compiled with CUDA graphs on a GPU;
the loop only asks the GPU whether every row has finished once every `check_every` tokens.

Only plain greedy requests take this path (`is_plain_greedy`); anything else goes to `generate`.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
from transformers import GenerationConfig, StaticCache

from .steps import cache_argument, generated_length

# what the decoder takes; a request may also carry settings that change nothing in greedy decoding
DECODER_ARGS = ("max_new_tokens", "min_new_tokens", "eos_token_id", "pad_token_id")
PLAIN_GREEDY_KEYS = {*DECODER_ARGS, "do_sample", "num_beams", "cache_implementation", "temperature", "top_p", "top_k"}
# a model's generation-config fields that, set, change greedy decoding (processors, stopping criteria)
GREEDY_CHANGING_FIELDS = ("repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "suppress_tokens",
                          "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id", "sequence_bias",
                          "encoder_repetition_penalty", "min_length", "min_new_tokens", "renormalize_logits",
                          "exponential_decay_length_penalty", "guidance_scale", "watermarking_config",
                          "stop_strings", "max_time")
DEFAULTS = GenerationConfig()
CACHE_LENGTH_STEP = 64  # cache lengths are rounded up so that nearby prompt lengths share one compiled step


def asks_only_greedy(settings: dict[str, Any]) -> bool:
    """Whether the request's settings ask for nothing but greedy decoding and end-of-text handling."""
    return not (set(settings) - PLAIN_GREEDY_KEYS or settings.get("do_sample") or settings.get("num_beams", 1) != 1)


def is_plain_greedy(model: torch.nn.Module, settings: dict[str, Any]) -> bool:
    """Whether `generate(**settings)` is greedy decoding with nothing but end-of-text handling."""
    if not asks_only_greedy(settings):
        return False
    own = model.generation_config
    return all(getattr(own, f, None) == getattr(DEFAULTS, f, None) for f in GREEDY_CHANGING_FIELDS if f not in settings)


class StaticGreedyDecoder:
    """Greedy continuations of left-padded input embeddings, token-identical to `generate`'s greedy search."""

    def __init__(self, model: torch.nn.Module, compile_step: bool | None = None, check_every: int = 8):
        self.model = model
        self.check_every = check_every
        self.passes_cache_position = "cache_position" in inspect.signature(model.forward).parameters
        self.cache_argument = cache_argument(model)
        self.device = next(model.parameters()).device
        self.compiled = self.device.type == "cuda" if compile_step is None else compile_step
        self._step = self._forward_step
        if self.compiled:  # the first call of each shape compiles (tens of seconds for a billion-parameter LM)
            self._step = torch.compile(self._forward_step, mode="reduce-overhead", dynamic=False)
        self._cache: StaticCache | None = None
        self._cache_key: tuple | None = None

    @property
    def cache(self) -> StaticCache | None:
        """The static KV cache of the last call: reused (reset) while batch size and length stay the same."""
        return self._cache

    def _cache_for(self, batch: int, length: int, like: torch.Tensor) -> StaticCache:
        """The static cache, reused across calls of one shape: a compiled step keeps its addresses."""
        key = (batch, length, like.dtype, like.device)
        if self._cache is not None and self._cache_key == key:
            self._cache.reset()
        else:
            self._cache, self._cache_key = StaticCache(config=self.model.config, max_cache_len=length), key
        return self._cache

    def _logits(self, cache, positions, mask, cache_position, **inputs) -> torch.Tensor:
        extra = {"cache_position": cache_position} if self.passes_cache_position else {}
        extra[self.cache_argument] = cache
        out = self.model(**inputs, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                         **extra)
        return out.logits[:, -1].float()

    @staticmethod
    def _choose(logits: torch.Tensor, eos: torch.Tensor, suppress_eos: torch.Tensor) -> torch.Tensor:
        """Greedy choice; `min_new_tokens` not yet reached suppresses the end-of-text ids."""
        banned = torch.zeros_like(logits[0], dtype=torch.bool).index_fill(0, eos, True) & suppress_eos
        return logits.masked_fill(banned, float("-inf")).argmax(dim=-1)

    def _forward_step(self, cache, token, position, mask, cache_position, eos, suppress_eos) -> torch.Tensor:
        return self._choose(self._logits(cache, position, mask, cache_position, input_ids=token), eos, suppress_eos)

    @torch.no_grad()
    def __call__(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor,
        *,
        max_new_tokens: int,
        eos_token_id: int | Sequence[int] | None,
        pad_token_id: int,
        min_new_tokens: int = 0,
    ) -> torch.Tensor:
        """New token ids `(B, T_new)` for left-padded `embeds (B, T, D)`; after a row's end of text, padding."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        batch, prompt_length = mask.shape
        device = embeds.device
        eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        eos = torch.tensor(eos_ids or [pad_token_id], device=device)
        may_end = bool(eos_ids)
        # per new token, made once: no host-to-device copy inside the loop
        suppress_eos = torch.tensor([may_end and k < min_new_tokens for k in range(max_new_tokens)], device=device)
        cache_positions = torch.arange(prompt_length, prompt_length + max_new_tokens, device=device)
        length = -(-(prompt_length + max_new_tokens) // CACHE_LENGTH_STEP) * CACHE_LENGTH_STEP
        cache = self._cache_for(batch, length, embeds)
        # slots not yet written are hidden by causality; ones keep the mask one shape for every step
        full_mask = torch.ones(batch, length, dtype=mask.dtype, device=device)
        full_mask[:, :prompt_length] = mask
        positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
        logits = self._logits(cache, positions, full_mask, torch.arange(prompt_length, device=device),
                              inputs_embeds=embeds)
        token = self._choose(logits, eos, suppress_eos[0])

        tokens = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        next_position = positions[:, -1:] + 1
        for step in range(max_new_tokens):
            tokens[:, step] = token.masked_fill(finished, pad_token_id)
            if may_end:
                finished |= torch.isin(token, eos)
            done = step + 1 == max_new_tokens
            if done or (may_end and (step + 1) % self.check_every == 0 and bool(finished.all())):
                break
            if self.compiled:
                torch.compiler.cudagraph_mark_step_begin()
            token = self._step(cache, tokens[:, step : step + 1], next_position + step, full_mask,
                               cache_positions[step : step + 1], eos, suppress_eos[step + 1])
            token = token.clone()  # CUDA graphs overwrite their outputs on the next replay
        return tokens[:, : generated_length(tokens.cpu().numpy(), eos_ids)]
