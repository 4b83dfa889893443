"""The models behind every server, whatever the engine: Ray Serve's deployments and BentoML's services
each wrap one of these and add only their own batching.

A batch is answered item by item: a request the model refuses (a question over the language
model's prompt length, counted in its tokens) gets its own 4xx, and its batch-mates their answers.
Every reply is a JSON-ready dict; a refusal is `{"error": sentence, "status": code}`.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from ..processing.images import ImageLoadError


def refusal(status: int, error: BaseException | str) -> dict:
    return {"error": str(error), "status": status}


def is_refusal(reply: Any) -> bool:
    return isinstance(reply, dict) and "error" in reply and "status" in reply


def answered_each(run: Callable[[list], list], items: list, reply: Callable[[Any], dict]) -> list[dict]:
    """`run(items)` as replies; when the batch as a whole fails, each item alone, so only the items
    at fault are refused."""
    try:
        outputs = run(items)
    except ValueError as e:
        if len(items) == 1:
            return [refusal(422, e)]
        return [answered_each(run, [item], reply)[0] for item in items]
    return [refusal(400, out) if isinstance(out, ImageLoadError) else reply(out) for out in outputs]


class CaptionWorker:
    """A captioner (`load_captioner(model)`) for servers: `caption`, `ask` and `scores`."""

    def __init__(self, model: str = "default"):
        from ..grounded.loading import image_text_scorer, load_captioner

        self.captioner = load_captioner(model)
        self.scorer = image_text_scorer(self.captioner)
        # one model, called from a server's threads: tokenizers and torch modules are not re-entrant
        self._lock = threading.Lock()

    def caption(self, images: Sequence) -> list[dict]:
        with self._lock:
            return answered_each(lambda batch: self.captioner.caption(batch, return_exceptions=True), list(images),
                                 lambda answer: answer.to_dict())

    def ask(self, requests: Sequence[tuple]) -> list[dict]:
        """`requests`: (image, question) pairs."""
        replies: list[dict | None] = [None] * len(requests)
        asked = []
        with self._lock:
            for k, (_, question) in enumerate(requests):
                try:
                    self.captioner.check_question(question)
                    asked.append(k)
                except ValueError as e:
                    replies[k] = refusal(422, e)
            if asked:
                def run(rows: list[int]) -> list:
                    return self.captioner.ask([requests[k][0] for k in rows], [requests[k][1] for k in rows],
                                              return_exceptions=True)

                for k, reply in zip(asked, answered_each(run, asked, lambda answer: answer.to_dict())):
                    replies[k] = reply
        return replies

    def scores(self, image, texts: list[str]) -> dict:
        if self.scorer is None:  # the grounded captioner alone has no image-text scores
            return refusal(400, "this server's captioner has no image-text scores; serve a bridge (--model)")
        with self._lock:
            similarity = self.scorer.scores([image], texts)[0]
        return {"texts": texts, "scores": [round(float(s), 6) for s in similarity]}


class WildlifeWorker:
    """The default wildlife pipeline for servers: one MegaDetector batch file per image."""

    def __init__(self):
        from ..wildlife import WildlifePipeline
        from ..wildlife.batch import describe_run

        self.pipeline = WildlifePipeline.default()
        self.detector, self.classifier, self.metadata = describe_run(self.pipeline)
        self._lock = threading.Lock()

    def report(self, images: Sequence, names: Sequence[str]) -> list[dict]:
        from ..wildlife.results import to_megadetector

        with self._lock:
            results = self.pipeline(list(images), names=list(names))
        return [to_megadetector([r], self.detector, self.classifier, self.metadata) for r in results]


class EnsembleWorker:
    """The caption ensemble graph (three decodings of one bridge, each scored, ranked) in one process."""

    def __init__(self, model: str = "default"):
        from .caption_ensemble import caption_ensemble

        self.graph = caption_ensemble(model)

    def rank(self, images: Sequence) -> list[dict]:
        return [{**r.values["ranked"], "seconds": r.timings} for r in self.graph.map([{"image": i} for i in images])]
