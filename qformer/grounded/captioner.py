"""Captioners behind one interface, and the default that routes between them:

    route (photo or drawing?) ──photo──> facts (NanoDet + EfficientNet-Lite2) ──> caption or answer from the facts
                             └─drawing─> the trained bridge (Q-Former + SmolLM2)

Every answer records which path gave it (`source`: "bridge" or "grounded") and, when grounded, the
facts it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..compose import Chain, Graph, Node, Switch
from ..processing.images import ImageInput, ImageLoadError, load_image
from ..processing.prompts import check_question, check_questions, questions_for
from .facts import FactFinder, Facts
from .language import answer, caption


@dataclass
class Answer:
    text: str
    source: str  # "bridge" or "grounded"
    facts: Facts | None = None

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict:
        return {"text": self.text, "source": self.source, **({"facts": self.facts.to_dict()} if self.facts else {})}


def _questions(questions: str | Sequence[str] | None, count: int) -> list[str | None]:
    if questions is None:
        return [None] * count
    return list(check_questions(questions_for(count, questions)))


class Captioner:
    """`caption(images)` and `ask(images, questions)` -> one `Answer` per image (or, with
    `return_exceptions=True`, the `ImageLoadError` of an unreadable one in its place)."""

    def caption(self, images: Sequence[ImageInput], prompt: str | None = None, return_exceptions: bool = False,
                **generation: Any) -> list[Answer | ImageLoadError]:
        return self._run(images, None, prompt, return_exceptions, generation)

    def ask(self, images: Sequence[ImageInput], questions: str | Sequence[str], return_exceptions: bool = False,
            **generation: Any) -> list[Answer | ImageLoadError]:
        return self._run(images, questions, None, return_exceptions, generation)

    def check_question(self, question: str) -> str:
        """`question` if this captioner can answer it; else a `ValueError` that says why (before any work)."""
        return check_question(question)

    def _run(self, images, questions, prompt, return_exceptions, generation) -> list:
        images = [images] if isinstance(images, (str, bytes)) or not isinstance(images, Sequence) else list(images)
        questions = _questions(questions, len(images))
        results: list = [None] * len(images)
        loaded = []
        for k, image in enumerate(images):
            try:
                loaded.append((k, load_image(image)))
            except ImageLoadError as e:
                if not return_exceptions:
                    raise
                results[k] = e
        if loaded:
            answers = self._answer([i for _, i in loaded], [questions[k] for k, _ in loaded], prompt, generation)
            for (k, _), a in zip(loaded, answers):
                results[k] = a
        return results

    def _answer(self, images, questions, prompt, generation) -> list[Answer]:
        raise NotImplementedError


class BridgeCaptioner(Captioner):
    """A Q-Former bridge (`qformer.create_model(...)`), answering everything."""

    def __init__(self, model):
        self.model = model

    def check_question(self, question: str) -> str:
        """As the base, and within the language model's prompt length, counted in its tokens."""
        processor = self.model.processor
        try:
            processor.prompt_ids(processor.question_prompts([super().check_question(question)]))
        except ValueError as e:
            raise ValueError(f"the question is too long for this model: {e}; ask a shorter one") from None
        return question

    def _answer(self, images, questions, prompt, generation) -> list[Answer]:
        if questions[0] is None:
            texts = self.model.caption(images, prompt=prompt, **generation)
        else:
            texts = self.model.ask(images, questions, **generation)
        return [Answer(t, "bridge") for t in texts]


class GroundedCaptioner(Captioner):
    """Captions and answers from facts about the photo; nothing else."""

    def __init__(self, finder: FactFinder | None = None):
        self.finder = finder or FactFinder()

    def _answer(self, images, questions, prompt, generation) -> list[Answer]:
        return [_from_facts(f, q) for f, q in zip(self.finder(images), questions)]


def _from_facts(facts: Facts, question: str | None) -> Answer:
    return Answer(caption(facts) if question is None else answer(facts, question), "grounded", facts)


class RoutedCaptioner(Captioner):
    """Photos to the grounded captioner, drawings to the bridge, chosen by `router` (p(photo))."""

    def __init__(self, bridge: BridgeCaptioner, grounded: GroundedCaptioner, router, batch_size: int = 8):
        self.bridge, self.grounded, self.router = bridge, grounded, router
        self.batch_size = batch_size

    def check_question(self, question: str) -> str:
        return self.bridge.check_question(question)  # a drawing's question goes to the bridge

    def graph(self, prompt: str | None, generation: dict) -> Graph:
        def bridge(images: list, questions: list) -> list[Answer]:
            return self.bridge._answer(images, questions, prompt, generation)

        return Graph(Chain(
            "routed captioner",
            Node("route", self.router, ["image"], "p_photo", batch_size=self.batch_size),
            Switch("photo or drawing", lambda s: "grounded" if s["p_photo"] >= self.router.threshold else "bridge", {
                "grounded": Chain("grounded",
                                  Node("facts", self.grounded.finder, ["image"], "facts", batch_size=self.batch_size),
                                  Node("words", _from_facts, ["facts", "question"], "answer")),
                "bridge": Node("bridge", bridge, ["image", "question"], "answer", batch_size=self.batch_size),
            }),
        ))

    def _answer(self, images, questions, prompt, generation) -> list[Answer]:
        states = [{"image": i, "question": q} for i, q in zip(images, questions)]
        return [r["answer"] for r in self.graph(prompt, generation).map(states)]
