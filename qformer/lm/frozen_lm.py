"""The frozen language model, fed the projected queries as a soft visual prompt in front of its text.

Loading lives in `lm/loading.py`, and where the prefix goes (causal or seq2seq) in `lm/layouts.py`;
this module holds the frozen contract, the loss and generation, all on tensors. With `lm.quantize` or
`lm.onnx` the LM runs on onnxruntime (`deploy/onnx_lm.py`): then only its input embeddings are in torch, and
it decodes greedily, for inference only.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..config import LMConfig
from ..pretrained.frozen import Frozen
from ..processing.prompts import DEFAULT_MAX_NEW_TOKENS, check_generation
from .decoding import DECODER_ARGS, StaticGreedyDecoder, asks_only_greedy, is_plain_greedy
from .layouts import LAYOUTS
from .loading import load_language_model, load_onnx_language_model
from .tokenizers import pad_rows, tokenized

IMAGE_TOKEN = "<image>"


class FrozenLM(Frozen):
    """A transformers LM and its tokenizer that never train; gradients still flow to the prefix."""

    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = config
        self.engine = None  # an OnnxCausalLM when the LM runs on onnxruntime
        if config.quantize or config.onnx:
            self.engine, self.tokenizer = load_onnx_language_model(config)
            self.model, self.kind = None, "causal"
            # the engine's mapped table, shared: rows are read from the file as they are looked up
            self.input_embeddings = nn.Embedding.from_pretrained(torch.from_numpy(self.engine.embeddings), freeze=True)
        else:
            self.model, self.tokenizer, self.kind = load_language_model(config)
            self.input_embeddings = self.model.get_input_embeddings()
        self.layout = LAYOUTS[self.kind]
        self._decoder: StaticGreedyDecoder | None = None  # made at the first static-cache greedy request
        self.freeze()

    @property
    def hidden_size(self) -> int:
        return self.input_embeddings.embedding_dim

    @property
    def dtype(self) -> torch.dtype:
        return self.input_embeddings.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.input_embeddings.weight.device

    @property
    def image_token_id(self) -> int | None:
        """The `<image>` placeholder id, when the tokenizer has one (BLIP-2 processors add it)."""
        # one lookup, not `get_vocab()`, which builds a dict of the whole vocabulary (18 ms for SmolLM2)
        token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        unknown = self.tokenizer.unk_token_id is not None and self.tokenizer.unk_token != IMAGE_TOKEN
        return None if token_id is None or (unknown and token_id == self.tokenizer.unk_token_id) else token_id

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.input_embeddings(input_ids.to(self.device))

    # --- training -----------------------------------------------------------------------------

    def loss(self, prefix: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the labelled tokens given `[prefix; input]` (a processor's `lm_training`)."""
        if self.engine is not None:
            raise ValueError("the language model runs on onnxruntime (lm.quantize or lm.onnx), for inference only; "
                             "train with both unset, so that it runs in torch")
        return self.layout.loss(self.model, prefix, self.embed(input_ids), attention_mask.to(self.device),
                                labels.to(self.device))

    # --- generation ---------------------------------------------------------------------------

    def embed_with_prefix(self, prefix: torch.Tensor, input_ids: torch.Tensor,
                          attention_mask: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings for generation. Recent BLIP-2 processors put Q `<image>` tokens in `input_ids`: the
        prefix replaces them. Ours and older ones don't: the prefix goes in front, as the layout says."""
        input_ids = input_ids.to(self.device)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(self.device)
        embeds = self.embed(input_ids)
        image_token_id = self.image_token_id
        slots = input_ids == image_token_id if image_token_id is not None else None
        if slots is not None and slots.any():
            counts = slots.sum(dim=1)
            if (counts != prefix.shape[1]).any():
                raise ValueError(f"each row of input_ids needs {prefix.shape[1]} {IMAGE_TOKEN} tokens (one per query); "
                                 f"found {counts.tolist()}")
            return embeds.masked_scatter(slots[..., None], prefix.to(embeds.dtype)), mask
        return self.layout.generation_inputs(prefix, embeds, mask)

    @torch.no_grad()
    def generate(self, prefix: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 **generation: Any) -> torch.Tensor:
        """New token ids `(B, T_new)` after `[prefix; input]`, padded after EOS with the pad token.
        `generation` goes to transformers' `generate` (max_new_tokens, num_beams, do_sample, top_p...)."""
        embeds, mask = self.embed_with_prefix(prefix, input_ids, attention_mask)
        return self.generate_from_embeds(embeds, mask, **generation)

    @torch.no_grad()
    def generate_from_embeds(self, embeds: torch.Tensor, mask: torch.Tensor, **generation: Any) -> torch.Tensor:
        settings = {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS, "pad_token_id": self.tokenizer.pad_token_id,
                    "eos_token_id": self.tokenizer.eos_token_id, **generation}
        check_generation(settings)
        if not settings.get("do_sample"):
            # the model's own generation config may carry sampling settings; greedy/beam ignores them
            settings.setdefault("do_sample", False)
            settings.update({k: None for k in ("temperature", "top_p", "top_k") if k not in generation})
        if self.engine is not None:
            return self._engine_greedy(embeds, mask, settings)
        static = settings.get("cache_implementation") == "static"
        if static and self.layout.static_greedy and is_plain_greedy(self.model, settings):
            return self._static_greedy(embeds, mask, **{k: settings[k] for k in DECODER_ARGS if k in settings})
        return self.layout.new_tokens(self.model.generate(inputs_embeds=embeds, attention_mask=mask, **settings))

    def _static_greedy(self, embeds: torch.Tensor, mask: torch.Tensor, **settings: Any) -> torch.Tensor:
        """Our own greedy loop (`qformer.lm.decoding`): same tokens as `generate`, one compiled step per token."""
        if self._decoder is None or self._decoder.device != embeds.device:  # compiled on CUDA only: a move decides anew
            self._decoder = StaticGreedyDecoder(self.model)
        return self._decoder(embeds, mask, **settings)

    def _engine_greedy(self, embeds: torch.Tensor, mask: torch.Tensor, settings: dict[str, Any]) -> torch.Tensor:
        if not asks_only_greedy(settings):
            raise ValueError("the language model runs on onnxruntime (lm.quantize or lm.onnx), which decodes "
                             "greedily: drop sampling and beam settings, or run it in torch (unset lm.quantize; "
                             "on the command line, --quantize none)")
        tokens = self.engine.greedy(embeds.float().cpu().numpy(), mask.cpu().numpy(),
                                    **{k: settings[k] for k in DECODER_ARGS if k in settings})
        return torch.from_numpy(tokens).to(embeds.device)

    @torch.no_grad()
    def generate_text(self, prompts: Sequence[str], **generation: Any) -> list[str]:
        """Plain text continuations, no visual prefix: the LM as the chat model it is (summaries)."""
        rows = tokenized(self.tokenizer, prompts, add_special_tokens=False)
        # padded here, on the left, rather than by switching the shared tokenizer's side: threads share it
        ids = pad_rows(rows, self.tokenizer.pad_token_id, left=True).to(self.device)
        mask = pad_rows([[1] * len(r) for r in rows], 0, left=True).to(self.device)
        settings = {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS, "do_sample": False,
                    "pad_token_id": self.tokenizer.pad_token_id, **generation}
        check_generation(settings)
        if self.engine is not None:
            tokens = self.generate_from_embeds(self.embed(ids), mask, **settings)
            return [t.strip() for t in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]
        output = self.model.generate(input_ids=ids, attention_mask=mask, **settings)
        new = self.layout.continuation(output, ids.shape[1])
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]


__all__ = ["FrozenLM", "IMAGE_TOKEN"]
