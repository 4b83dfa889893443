"""The same captioner and wildlife models as BentoML services, composed with `bentoml.depends`: each
model is a service of its own (its own worker process and `resources`) with batchable APIs, behind
an `Api` service that mounts the HTTP API of `http_api.py`, the one Ray Serve serves too.
`bentofile.yaml` at the repository root packages it (`bentoml build`, `bentoml containerize`).

    qformer serve --engine bentoml            # or: bentoml serve qformer.serving.bento_app:Api
    POST /caption, /ask, /scores, /wildlife, /ensemble (with --ensemble)
    GET  /healthz, /readyz, /metrics (Prometheus, with adaptive batch sizes)

BentoML reads a service's batching from its decorators, so the settings come from the environment
when this module is imported: `QFORMER_SERVE_MODEL` (the captioner; default: the routed default),
`QFORMER_SERVE_MAX_BATCH` (1: batching off) and `QFORMER_SERVE_ENSEMBLE=1`, which `qformer serve
--engine bentoml` sets from its flags.
"""

# no `from __future__ import annotations`: BentoML reads the APIs' annotations as types
import asyncio
import logging
import os
from typing import Awaitable, Callable, Optional

import bentoml
from PIL.Image import Image

from .http_api import build_api
from .limits import RequestLimits, prefer_h11
from .workers import CaptionWorker, EnsembleWorker, WildlifeWorker

MAX_BATCH = int(os.environ.get("QFORMER_SERVE_MAX_BATCH", "8"))
MODEL = os.environ.get("QFORMER_SERVE_MODEL", "default")
ENSEMBLE = os.environ.get("QFORMER_SERVE_ENSEMBLE") == "1"
MAX_LATENCY_MS = 60_000
# BentoML takes batches of at least 2; batching off is a plain API, called with a list of one
BATCHING = {"batchable": MAX_BATCH > 1, "max_batch_size": max(MAX_BATCH, 2), "max_latency_ms": MAX_LATENCY_MS}
TRAFFIC = {"timeout": 300}

prefer_h11()  # before BentoML starts this worker's uvicorn (see limits.py)


class QuietShutdown(logging.Filter):
    """A readiness probe that reaches the entry service while it starts is left waiting by BentoML
    for good; at shutdown uvicorn cancels it and logs the cancellation as an error, with a traceback.
    Nothing went wrong, and no one can act on it, so those two records are dropped; others stand."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            return False
        return "timeout graceful shutdown exceeded" not in record.getMessage()


logging.getLogger("uvicorn.error").addFilter(QuietShutdown())


@bentoml.service(resources={"cpu": "1"}, traffic=TRAFFIC)
class CaptionService:
    def __init__(self):
        self.worker = CaptionWorker(MODEL)

    @bentoml.api(**BATCHING)
    def caption(self, images: list[Image]) -> list[dict]:
        return self.worker.caption(images)

    @bentoml.api  # BentoML batches one argument only: a question comes with its image, one per call
    def ask(self, image: Image, question: str) -> dict:
        (reply,) = self.worker.ask([(image, question)])
        return reply

    @bentoml.api
    def scores(self, image: Image, texts: list[str]) -> dict:
        return self.worker.scores(image, texts)


@bentoml.service(resources={"cpu": "1"}, traffic=TRAFFIC)
class WildlifeService:
    def __init__(self):
        self.worker = WildlifeWorker()

    @bentoml.api(**BATCHING)
    def report(self, images: list[Image]) -> list[dict]:
        return self.worker.report(images, ["upload"] * len(images))  # the API names each file


@bentoml.service(resources={"cpu": "1"}, traffic=TRAFFIC)
class EnsembleService:
    """The caption ensemble graph in this service's process: its six nodes share the bridge, as a
    group of nodes does on Ray Serve."""

    def __init__(self):
        self.worker = EnsembleWorker(MODEL)

    @bentoml.api(**BATCHING)
    def rank(self, images: list[Image]) -> list[dict]:
        return self.worker.rank(images)


@bentoml.service(traffic=TRAFFIC)
@bentoml.asgi_app(build_api(bentoml.get_current_service), path="/")
class Api:
    """The HTTP API (`http_api.py`) over the model services."""

    caption_service = bentoml.depends(CaptionService)
    wildlife_service = bentoml.depends(WildlifeService)
    if ENSEMBLE:
        ensemble_service = bentoml.depends(EnsembleService)

    async def caption(self, image) -> dict:
        (reply,) = await _calling(lambda: self.caption_service.to_async.caption([image]))
        return reply

    async def ask(self, image, question: str) -> dict:
        return await _calling(lambda: self.caption_service.to_async.ask(image, question))

    async def scores(self, image, texts: list) -> dict:
        return await _calling(lambda: self.caption_service.to_async.scores(image, texts))

    async def wildlife(self, image, name: str) -> dict:
        (report,) = await _calling(lambda: self.wildlife_service.to_async.report([image]))
        for entry in report["images"]:
            entry["file"] = name
        return report

    async def ensemble(self, image) -> Optional[dict]:
        if not ENSEMBLE:
            return None
        (ranked,) = await _calling(lambda: self.ensemble_service.to_async.rank([image]))
        return ranked


async def _calling(call: Callable[[], Awaitable], attempts: int = 3):
    """A call to a model service, made again when its connection broke before an answer came: BentoML's
    client replaces its HTTP session every 100 requests and closes the old one under requests still
    using it (under 32 parallel requests, a few in each hundred failed so). Model calls have no side
    effects, so a repeat is safe."""
    import aiohttp

    for attempt in range(attempts):
        try:
            return await call()
        except aiohttp.ClientConnectionError:
            if attempt == attempts - 1:
                raise


Api.add_asgi_middleware(RequestLimits)
