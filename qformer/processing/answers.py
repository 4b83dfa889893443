"""The captioner core, without torch: what every captioner answers with (`Answer`), how a batch keeps
each unreadable input's error in its own place (`in_slots`), and the `Captioner` interface that the
bridge, the torch-free runtime, grounded captions, the CLI, the demo and both servers share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .images import ImageInput, ImageLoadError, describe, load_images
from .prompts import as_list, check_question, check_questions, questions_for


@dataclass
class Answer:
    text: str
    source: str  # "bridge" or "grounded"
    facts: Any = None  # for a grounded answer, the facts it came from (`qformer.grounded.Facts`)

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict:
        return {"text": self.text, "source": self.source, **({"facts": self.facts.to_dict()} if self.facts else {})}


class NotAnswered(ImageLoadError):
    """An input that was read but that this captioner cannot answer (a drawing, where the bridge that
    answers drawings cannot run); kept in its slot like an unreadable one."""

    def __init__(self, reason: str, source: str = "this image"):
        super().__init__(source, reason)


def in_slots(errors: Sequence[Exception | None], values: Iterable) -> list:
    """One entry per input: the next of `values` (answers for the readable inputs, in order) where the
    input was read, its error where it was not."""
    values = iter(values)
    return [next(values) if error is None else error for error in errors]


class Captioner:
    """`caption(images)` and `ask(images, questions)` -> one `Answer` per image (or, with
    `return_exceptions=True`, the `ImageLoadError` of an unreadable one in its place). An empty batch
    is a `ValueError`, as it is for `Blip2.caption`."""

    def caption(self, images: ImageInput | Sequence[ImageInput], prompt: str | None = None,
                return_exceptions: bool = False, **generation: Any) -> list[Answer | ImageLoadError]:
        return self._run(images, None, prompt, return_exceptions, generation)

    def ask(self, images: ImageInput | Sequence[ImageInput], questions: str | Sequence[str],
            return_exceptions: bool = False, **generation: Any) -> list[Answer | ImageLoadError]:
        return self._run(images, questions, None, return_exceptions, generation)

    def check_question(self, question: str) -> str:
        """`question` if this captioner can answer it; else a `ValueError` that says why (before any work)."""
        return check_question(question)

    def _run(self, images, questions, prompt, return_exceptions, generation) -> list:
        images = as_list(images, "images")
        asked = [None] * len(images)
        if questions is not None:
            asked = list(check_questions(questions_for(len(images), questions)))
        loaded, errors = load_images(images, return_exceptions)
        if not loaded:
            return list(errors)
        kept = [q for q, error in zip(asked, errors) if error is None]
        answers = in_slots(errors, self._answer(loaded, kept, prompt, generation))
        for k, answer in enumerate(answers):
            if isinstance(answer, NotAnswered) and answer.source == "this image":
                answers[k] = NotAnswered(answer.reason, describe(images[k]))  # named as the caller named it
        if not return_exceptions:
            for answer in answers:
                if isinstance(answer, NotAnswered):
                    raise answer
        return answers

    def _answer(self, images: list, questions: list[str | None], prompt: str | None, generation: dict) -> list[Answer]:
        raise NotImplementedError


class BridgeCaptioner(Captioner):
    """A bridge answering everything: `qformer.create_model(...)`'s model, or the torch-free runtime of
    an exported folder (`qformer.deploy.lite.LiteCaptioner`); anything with `caption`, `ask` and
    `check_question` that answers in text."""

    def __init__(self, model):
        self.model = model

    def check_question(self, question: str) -> str:
        """As the base, and within the language model's prompt length, counted in its tokens."""
        super().check_question(question)
        try:
            return self.model.check_question(question)
        except ValueError as e:
            raise ValueError(f"the question is too long for this model: {e}; ask a shorter one") from None

    def _answer(self, images, questions, prompt, generation) -> list[Answer]:
        if questions[0] is None:
            texts = self.model.caption(images, prompt=prompt, **generation)
        else:
            texts = self.model.ask(images, questions, **generation)
        return [Answer(text, "bridge") for text in texts]
