"""`Blip2Processor`: what a user passes in, as the tensors `Blip2` takes.

Images are decoded safely and preprocessed the way the frozen encoder was trained; texts for the
Q-Former and prompts and targets for the LM are tokenized and laid out for its kind (causal or
seq2seq). It holds no weights, so it pickles into `DataLoader` workers, as transformers'
`Blip2Processor` pairs with `Blip2ForConditionalGeneration`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import Image

from ..config import LMConfig, QFormerConfig
from ..lm.layouts import LAYOUTS
from ..lm.tokenizers import QFormerTokenizer, tokenized
from .images import ImageInput, ImageLoadError, load_images
from .prompts import check_prompt_lengths, question_prompts


class Blip2Processor:
    """`images(...)` -> pixels; `qformer_text(...)` -> ids and mask; `lm_training(...)` and
    `lm_generation(...)` -> the LM's ids, mask (and labels); `decode(...)` -> text."""

    def __init__(self, image_preprocessor: Callable[[Sequence[Image.Image]], torch.Tensor | tuple],
                 qformer_config: QFormerConfig, lm_tokenizer=None, lm_kind: str | None = None,
                 lm_config: LMConfig | None = None):
        self.image_preprocessor = image_preprocessor
        self.qformer_config = qformer_config
        self.lm_tokenizer, self.lm_config = lm_tokenizer, lm_config
        self.layout = LAYOUTS[lm_kind] if lm_kind else None
        self._qformer_tokenizer: QFormerTokenizer | None = None

    # --- images -------------------------------------------------------------------------------

    def images(self, images: Sequence[ImageInput], return_exceptions: bool = False
               ) -> tuple[torch.Tensor | tuple | None, list[ImageLoadError | None]]:
        """Pixels for the readable images, and per input either None or the error that stopped it."""
        loaded, errors = load_images(images, return_exceptions)
        return (self.image_preprocessor(loaded) if loaded else None), errors

    # --- the Q-Former's text ------------------------------------------------------------------

    @property
    def qformer_tokenizer(self) -> QFormerTokenizer:
        """Loaded on first use: captioning never needs it, and it may name a hub tokenizer."""
        if self._qformer_tokenizer is None:
            self._qformer_tokenizer = QFormerTokenizer(self.qformer_config.tokenizer,
                                                       self.qformer_config.max_text_length)
        return self._qformer_tokenizer

    def qformer_text(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """`(input_ids, attention_mask)`, both `(B, T)`."""
        return self.qformer_tokenizer(texts)

    # --- the LM's text ------------------------------------------------------------------------

    def _require_lm(self) -> None:
        if self.layout is None:
            raise ValueError("this model has no language model (config.lm is None); it scores image-text pairs only")

    def prompt_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt as an input prefix: BOS if the tokenizer adds one, never a trailing
        EOS on causal models. Control tokens typed in the text stay text (split_special_tokens)."""
        self._require_lm()
        tokenizer = self.lm_tokenizer
        rows = tokenized(tokenizer, prompts, add_special_tokens=True, split_special_tokens=True)
        rows = self.layout.prompt_rows(rows, tokenizer.eos_token_id)
        return check_prompt_lengths(rows, prompts, self.lm_config.max_prompt_tokens)

    def target_ids(self, prompts: Sequence[str], targets: Sequence[str]) -> list[list[int]]:
        """Target ids ending in EOS; a space separates them from a non-empty prompt."""
        texts = [(" " + t if p and not p.endswith(" ") else t) for p, t in zip(prompts, targets)]
        rows = tokenized(self.lm_tokenizer, texts, add_special_tokens=False, split_special_tokens=True)
        return [r + [self.lm_tokenizer.eos_token_id] for r in rows]

    def lm_training(self, prompts: Sequence[str], targets: Sequence[str]) -> dict[str, torch.Tensor]:
        """`input_ids`, `attention_mask` and `labels` for the LM loss (labels only on the targets)."""
        ids, mask, labels = self.layout.training_ids(self.prompt_ids(prompts), self.target_ids(prompts, targets),
                                                     self.lm_tokenizer.pad_token_id)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def lm_generation(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """`input_ids` and `attention_mask` of the prompts, padded as the LM's kind needs."""
        ids, mask = self.layout.generation_ids(self.prompt_ids(prompts), self.lm_tokenizer.pad_token_id)
        return {"input_ids": ids, "attention_mask": mask}

    def question_prompts(self, questions: Sequence[str]) -> list[str]:
        return question_prompts(self.lm_config.question_template, questions)

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        return [t.strip() for t in self.lm_tokenizer.batch_decode(token_ids, skip_special_tokens=True)]
