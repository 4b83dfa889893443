"""The convenience API over `Blip2`: files, bytes or PIL images and strings in, text and scores out.

It asks the model's processor for tensors, runs the model on them, and keeps each unreadable input's
error in its place (`return_exceptions=True`) so one bad file does not lose the others.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, Sequence

import torch
from torch import nn

from .answers import in_slots
from .images import ImageInput, ImageLoadError
from .prompts import as_list, check_question, questions_for


def inference(method):
    """Run `method` without gradients and with dropout off, whatever mode the model is in (a model
    fresh from training is in training mode), then give the mode back: the same input always gives
    the same answer."""

    @functools.wraps(method)
    def run(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        was_training = self.training
        # switching a few hundred modules costs milliseconds a call: only when one is in training mode
        switch = any(module.training for module in self.modules())
        if switch:
            self.train(False)
        try:
            with torch.no_grad():
                return method(self, *args, **kwargs)
        finally:
            if switch:
                self.train(was_training)

    return run


class InferenceMixin:
    """`caption`, `ask` and `scores` for a `Blip2`."""

    def load_images(self, images: ImageInput | Sequence[ImageInput], return_exceptions: bool = False
                    ) -> tuple[torch.Tensor | tuple | None, list[ImageLoadError | None]]:
        """Pixels for the readable images, and per input either None or the error that stopped it."""
        return self.processor.images(as_list(images, "images"), return_exceptions)

    @inference
    def caption(self, images: ImageInput | Sequence[ImageInput], prompt: str | None = None,
                return_exceptions: bool = False, **generation: Any) -> list[str | ImageLoadError]:
        """One caption per image. With `return_exceptions=True` an unreadable image gives its
        `ImageLoadError` in its place and the others are still captioned."""
        self._require_lm("generate text")
        images = as_list(images, "images")
        prompt = self.config.lm.prompt if prompt is None else prompt
        return self._answer(images, [prompt] * len(images), return_exceptions, generation)

    @inference
    def ask(self, images: ImageInput | Sequence[ImageInput], questions: str | Sequence[str],
            return_exceptions: bool = False, **generation: Any) -> list[str | ImageLoadError]:
        """One answer per (image, question); a single question is asked of every image."""
        self._require_lm("generate text")
        images = as_list(images, "images")
        questions = questions_for(len(images), questions)
        return self._answer(images, self.processor.question_prompts(questions), return_exceptions, generation)

    def _answer(self, images: list, prompts: list[str], return_exceptions: bool, generation: dict) -> list:
        self.processor.prompt_ids(prompts)  # fail on an overlong prompt before any image work
        pixels, errors = self.processor.images(images, return_exceptions)
        if pixels is None:
            return list(errors)
        kept = [p for p, e in zip(prompts, errors) if e is None]
        tokens = self.generate(pixels, **self.processor.lm_generation(kept), **generation)
        return in_slots(errors, self.processor.decode(tokens))

    def check_question(self, question: str) -> str:
        """`question` if it is a question this model's prompt holds, counted in its LM's tokens; else a
        `ValueError` that says why, before any image work."""
        self.processor.prompt_ids(self.processor.question_prompts([check_question(question)]))
        return question

    @inference
    def scores(self, images: ImageInput | Sequence[ImageInput], texts: Sequence[str],
               method: Literal["itc", "itm"] = "itc") -> torch.Tensor:
        """Image-text match scores `(num_images, num_texts)`: ITC cosine similarity, or ITM match probability."""
        if method not in ("itc", "itm"):
            raise ValueError(f"method must be 'itc' or 'itm', got {method!r}")
        pixels, _ = self.load_images(images)
        ids, mask = self.processor.qformer_text(as_list(texts, "texts"))
        return self.match_scores(pixels, ids, mask, method)
