"""The same captioner and wildlife models as BentoML services, composed with `bentoml.depends`:
each model is a service of its own (its own worker process and `resources`) with batchable APIs
(adaptive batching, at most 8 a batch), behind an `Api` service with the same endpoints as the
Ray Serve app. `bentofile.yaml` at the repository root packages it (`bentoml build`,
`bentoml containerize`).

    qformer serve --engine bentoml            # or: bentoml serve qformer.serving.bento_app:Api
    POST /caption, /ask, /scores, /wildlife   (multipart: image, question, texts)
    POST /ensemble                            (with --ensemble: the caption ensemble graph, ranked)
    GET  /healthz, /readyz, /metrics (Prometheus, with adaptive batch sizes), /docs

`QFORMER_SERVE_MODEL` names the captioner (default: the routed default); `QFORMER_SERVE_ENSEMBLE=1`
adds the caption ensemble (`caption_ensemble.py`) as a service of its own.
"""

# no `from __future__ import annotations`: BentoML reads the APIs' annotations as types
import os
import re
from http import HTTPStatus
from pathlib import Path

import bentoml
from bentoml.exceptions import BentoMLException
from PIL.Image import Image

from .uploads import MAX_UPLOAD_BYTES, UploadError, checked_question, checked_texts, image_from_bytes

MAX_BATCH = int(os.environ.get("QFORMER_SERVE_MAX_BATCH", "8"))  # `qformer serve --max-batch`; 1: batching off
MAX_LATENCY_MS = 60_000
# BentoML takes batches of at least 2; batching off is a plain API, called with a list of one
BATCHING = {"batchable": MAX_BATCH > 1, "max_batch_size": max(MAX_BATCH, 2), "max_latency_ms": MAX_LATENCY_MS}
MODEL = os.environ.get("QFORMER_SERVE_MODEL", "default")
ENSEMBLE = os.environ.get("QFORMER_SERVE_ENSEMBLE") == "1"  # `qformer serve --engine bentoml --ensemble`


def _refusal(error: UploadError) -> BentoMLException:
    return BentoMLException(str(error), error_code=HTTPStatus(error.status))


def _image(path: Path):
    try:
        with open(path, "rb") as upload:  # one byte over the limit tells "too big" apart
            return image_from_bytes(upload.read(MAX_UPLOAD_BYTES + 1))
    except UploadError as e:
        raise _refusal(e) from None


def _checked(check, value):
    try:
        return check(value)
    except UploadError as e:
        raise _refusal(e) from None


@bentoml.service(resources={"cpu": "1"}, traffic={"timeout": 300})
class CaptionService:
    def __init__(self):
        from ..grounded.loading import image_text_scorer, load_captioner

        self.captioner = load_captioner(MODEL)
        self.scorer = image_text_scorer(self.captioner)

    @bentoml.api(**BATCHING)
    def caption(self, images: list[Image]) -> list[dict]:
        return [a.to_dict() for a in self.captioner.caption(images)]

    @bentoml.api  # one question per call, not batched (as /scores)
    def ask(self, image: Image, question: str) -> dict:
        return self.captioner.ask([image], [question])[0].to_dict()

    @bentoml.api
    def scores(self, image: Image, texts: list[str]) -> list[float]:
        if self.scorer is None:
            return []
        return [round(float(s), 6) for s in self.scorer.scores([image], texts)[0]]


@bentoml.service(resources={"cpu": "1"}, traffic={"timeout": 300})
class WildlifeService:
    def __init__(self):
        from ..wildlife import WildlifePipeline

        self.pipeline = WildlifePipeline.default()

    @bentoml.api(**BATCHING)
    def report(self, images: list[Image]) -> list[dict]:
        from ..wildlife.batch import describe_detector
        from ..wildlife.megadetector import to_megadetector

        results = self.pipeline(images, names=["upload"] * len(images))  # the API puts the file's name in
        return [to_megadetector([r], describe_detector(self.pipeline.detector), "EfficientNet-Lite2 experts")
                for r in results]


@bentoml.service(resources={"cpu": "1"}, traffic={"timeout": 300})
class EnsembleService:
    """The caption ensemble graph (three decodings of one bridge, each scored, ranked), in this
    service's process: its six nodes share the bridge, as a group of nodes does on Ray Serve."""

    def __init__(self):
        from ..grounded.loading import CAPTIONER_PRESETS
        from .caption_ensemble import caption_ensemble

        self.graph = caption_ensemble("default" if MODEL in CAPTIONER_PRESETS else MODEL)  # the presets' bridge

    @bentoml.api(**BATCHING)
    def rank(self, images: list[Image]) -> list[dict]:
        results = self.graph.map([{"image": image} for image in images])
        return [{**r.values["ranked"], "seconds": r.timings} for r in results]


@bentoml.service(traffic={"timeout": 300})
class Api:
    caption_service = bentoml.depends(CaptionService)
    wildlife_service = bentoml.depends(WildlifeService)  # not `wildlife`: that name is the endpoint
    if ENSEMBLE:
        ensemble_service = bentoml.depends(EnsembleService)

        @bentoml.api
        async def ensemble(self, image: Path) -> dict:
            (ranked,) = await self.ensemble_service.to_async.rank([_image(image)])
            return ranked

    @bentoml.api
    async def caption(self, image: Path) -> dict:
        (answer,) = await self.caption_service.to_async.caption([_image(image)])
        return answer

    @bentoml.api
    async def ask(self, image: Path, question: str) -> dict:
        _checked(checked_question, question)
        return await self.caption_service.to_async.ask(_image(image), question)

    @bentoml.api
    async def scores(self, image: Path, texts: list[str]) -> dict:
        _checked(checked_texts, texts)
        scores = await self.caption_service.to_async.scores(_image(image), texts)
        if not scores:
            raise BentoMLException("this server's captioner has no image-text scores; serve a bridge",
                                   error_code=HTTPStatus.BAD_REQUEST)
        return {"texts": texts, "scores": scores}

    @bentoml.api
    async def wildlife(self, image: Path) -> dict:
        (report,) = await self.wildlife_service.to_async.report([_image(image)])
        for entry in report["images"]:
            entry["file"] = _uploaded_name(Path(image))
        return report


def _uploaded_name(path: Path) -> str:
    """The client's file name: BentoML stores an upload as a temporary file (`tmp` and 8 random
    characters) with the client's name as its suffix."""
    return re.sub(r"^tmp[a-z0-9_]{8}", "", path.name) or "upload"
