"""The routed captioner and the wildlife pipeline as a Ray Serve application.

Each model is its own deployment, with its own CPUs and replicas, taking requests in adaptive
batches (`@serve.batch`); a FastAPI ingress receives uploads and calls them through deployment
handles. Locally, `qformer serve` starts it on this machine; on a cluster, the same app runs from
a Serve config (`serve run` / KubeRay's RayService), by configuration only.

    POST /caption   (multipart: image)              -> {"caption", "source", "facts"?}
    POST /ask       (multipart: image, question)    -> {"answer", "source", "facts"?}
    POST /scores    (multipart: image, texts)       -> {"scores": [...]} image-text similarity per text
    POST /wildlife  (multipart: image)              -> MegaDetector batch JSON for the image
    GET  /healthz                                   -> {"status": "ok"}
    GET  /metrics                                   -> Prometheus text: per-node latency and batch sizes
    GET  /docs                                      -> OpenAPI page

`build_ensemble_app` serves the caption ensemble graph (`caption_ensemble.py`) through the generic
graph deployment (`ray_graph.py`) at `POST /ensemble/` (multipart: image).
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations as types
import os
import time

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import PlainTextResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from .metrics import gather, record_batch, record_latency
from .ray_graph import use_the_machines_cores
from .uploads import MAX_UPLOAD_BYTES, UploadError, checked_question, checked_texts, image_from_bytes


MAX_BATCH = int(os.environ.get("QFORMER_SERVE_MAX_BATCH", "8"))  # `qformer serve --max-batch`; 1: batching off
BATCH_WAIT_S = 0.01

api = FastAPI(title="qformer", description="Captions, answers and wildlife reports for uploaded images.")


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32, graceful_shutdown_timeout_s=5)
class CaptionModel:
    def __init__(self, model: str = "default"):
        from ..grounded.loading import image_text_scorer, load_captioner

        use_the_machines_cores()
        self.captioner = load_captioner(model)
        self.scorer = image_text_scorer(self.captioner)

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def caption(self, images: list) -> list[dict]:
        with _measured("caption", len(images)):
            return [a.to_dict() for a in self.captioner.caption(images)]

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def ask(self, requests: list[tuple]) -> list[dict]:
        with _measured("ask", len(requests)):
            answers = self.captioner.ask([image for image, _ in requests], [question for _, question in requests])
            return [a.to_dict() for a in answers]

    async def scores(self, image, texts: list[str]) -> list[float] | None:
        if self.scorer is None:  # the grounded captioner alone has no image-text scores
            return None
        with _measured("scores", 1):
            return [round(float(s), 6) for s in self.scorer.scores([image], texts)[0]]


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32, graceful_shutdown_timeout_s=5)
class WildlifeModel:
    def __init__(self):
        from ..wildlife import WildlifePipeline

        use_the_machines_cores()
        self.pipeline = WildlifePipeline.default()

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def report(self, requests: list[tuple]) -> list[dict]:
        from ..wildlife.batch import describe_detector
        from ..wildlife.megadetector import to_megadetector

        with _measured("wildlife", len(requests)):
            results = self.pipeline([image for image, _ in requests], names=[name for _, name in requests])
        return [to_megadetector([r], describe_detector(self.pipeline.detector), "EfficientNet-Lite2 experts")
                for r in results]


class _measured:
    """Records a model call's latency and batch size under its node name (`metrics.py`)."""

    def __init__(self, node: str, batch: int):
        self.node, self.batch = node, batch

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        record_latency(self.node, time.perf_counter() - self.start)
        record_batch(self.node, self.batch)


async def _image(upload: UploadFile):
    try:
        return image_from_bytes(await upload.read(MAX_UPLOAD_BYTES + 1))
    except UploadError as e:
        raise HTTPException(e.status, str(e)) from None


def _checked(check, value):
    try:
        return check(value)
    except UploadError as e:
        raise HTTPException(e.status, str(e)) from None


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256, graceful_shutdown_timeout_s=5)
@serve.ingress(api)
class Api:
    def __init__(self, captioner: DeploymentHandle, wildlife: DeploymentHandle):
        self.captioner, self.wildlife = captioner, wildlife

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/metrics", response_class=PlainTextResponse)
    async def metrics(self) -> str:
        import asyncio

        return await asyncio.to_thread(gather)

    @api.post("/caption")
    async def caption(self, image: UploadFile = File(...)) -> dict:
        return await self.captioner.caption.remote(await _image(image))

    @api.post("/ask")
    async def ask(self, image: UploadFile = File(...), question: str = Form(...)) -> dict:
        _checked(checked_question, question)
        return await self.captioner.ask.remote((await _image(image), question))

    @api.post("/scores")
    async def scores(self, image: UploadFile = File(...), texts: list[str] = Form(...)) -> dict:
        _checked(checked_texts, texts)
        scores = await self.captioner.scores.remote(await _image(image), texts)
        if scores is None:
            raise HTTPException(400, "this server's captioner has no image-text scores; serve a bridge (--model)")
        return {"texts": texts, "scores": scores}

    @api.post("/wildlife")
    async def wildlife(self, image: UploadFile = File(...)) -> dict:
        return await self.wildlife.report.remote((await _image(image), image.filename or "upload"))


def build_app(model: str = "default", replicas: int = 1):
    """The application graph: `serve.run(build_app())`, or `serve run qformer.serving.ray_app:app`."""
    return Api.bind(CaptionModel.options(num_replicas=replicas).bind(model),
                    WildlifeModel.options(num_replicas=replicas).bind())


ensemble_api = FastAPI(title="qformer caption ensemble", description="Three decodings of one bridge, each "
                       "scored against the image, ranked.")


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256, graceful_shutdown_timeout_s=5)
@serve.ingress(ensemble_api)
class EnsembleApi:
    def __init__(self, graph: DeploymentHandle):
        self.graph = graph

    @ensemble_api.post("/")
    async def run(self, image: UploadFile = File(...)) -> dict:
        (result,) = await self.graph.remote([{"image": await _image(image)}])
        return {**result["values"]["ranked"], "seconds": result["timings"]}


def build_ensemble_app(model: str = "default"):
    """The caption ensemble graph, every node its own deployment, behind `POST /` (mount it at /ensemble)."""
    from .caption_ensemble import caption_ensemble
    from .ray_graph import deploy_graph, nodes_of

    # the nodes' replicas share the machine's cores; a small reservation lets six of them start on two
    graph = caption_ensemble(model)
    options = {node.name: {"ray_actor_options": {"num_cpus": 0.1}} for node in nodes_of(graph.root)}
    return EnsembleApi.bind(deploy_graph(graph, options))


ensemble_app = build_ensemble_app()  # `serve run qformer.serving.ray_app:ensemble_app --route-prefix /ensemble`


app = build_app()
