"""The routed captioner and the wildlife pipeline as a Ray Serve application.

Each model is its own deployment, with its own CPUs and replicas, taking requests in adaptive
batches (`@serve.batch`); a FastAPI ingress receives uploads and calls them through deployment
handles. Locally, `qformer serve` starts it on this machine; on a cluster, the same app runs from
a Serve config (`serve run` / KubeRay's RayService), by configuration only.

    POST /caption   (multipart: image)              -> {"caption", "source", "facts"?}
    POST /ask       (multipart: image, question)    -> {"answer", "source", "facts"?}
    POST /wildlife  (multipart: image)              -> MegaDetector batch JSON for the image
    GET  /healthz                                   -> {"status": "ok"}
    GET  /docs                                      -> OpenAPI page
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations as types
from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from ray import serve
from ray.serve.handle import DeploymentHandle

from ..images import ImageLoadError, load_image

MAX_UPLOAD_BYTES = 20 * 1024 * 1024


def _use_the_machines_cores() -> None:
    """Ray gives an actor as many threads as CPUs it reserved (one, for half a CPU); the models share
    this machine's cores as an in-process run would."""
    import os

    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
MAX_BATCH, BATCH_WAIT_S = 8, 0.01

api = FastAPI(title="qformer", description="Captions, answers and wildlife reports for uploaded images.")


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32, graceful_shutdown_timeout_s=5)
class CaptionModel:
    def __init__(self, model: str = "default"):
        from ..grounded import load_captioner

        _use_the_machines_cores()
        self.captioner = load_captioner(model)

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def caption(self, images: list) -> list[dict]:
        return [a.to_dict() for a in self.captioner.caption(images)]

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def ask(self, requests: list[tuple]) -> list[dict]:
        answers = self.captioner.ask([image for image, _ in requests], [question for _, question in requests])
        return [a.to_dict() for a in answers]


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32, graceful_shutdown_timeout_s=5)
class WildlifeModel:
    def __init__(self):
        from ..wildlife import WildlifePipeline

        _use_the_machines_cores()
        self.pipeline = WildlifePipeline.default()

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def report(self, requests: list[tuple]) -> list[dict]:
        from ..wildlife.batch import describe_detector
        from ..wildlife.megadetector import to_megadetector

        results = self.pipeline([image for image, _ in requests], names=[name for _, name in requests])
        return [to_megadetector([r], describe_detector(self.pipeline.detector), "EfficientNet-Lite2 experts")
                for r in results]


async def _image(upload: UploadFile):
    data = await upload.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"the upload is over {MAX_UPLOAD_BYTES // 2**20} MB; send a smaller image")
    try:
        return load_image(data)
    except ImageLoadError as e:
        raise HTTPException(400, f"could not read the upload: {e.reason}") from None


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256, graceful_shutdown_timeout_s=5)
@serve.ingress(api)
class Api:
    def __init__(self, captioner: DeploymentHandle, wildlife: DeploymentHandle):
        self.captioner, self.wildlife = captioner, wildlife

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.post("/caption")
    async def caption(self, image: UploadFile = File(...)) -> dict:
        return await self.captioner.caption.remote(await _image(image))

    @api.post("/ask")
    async def ask(self, image: UploadFile = File(...), question: str = Form(...)) -> dict:
        if not question.strip() or len(question) > 1000:
            raise HTTPException(422, "ask a question of 1 to 1000 characters")
        return await self.captioner.ask.remote((await _image(image), question))

    @api.post("/wildlife")
    async def wildlife(self, image: UploadFile = File(...)) -> dict:
        return await self.wildlife.report.remote((await _image(image), image.filename or "upload"))


def build_app(model: str = "default", replicas: int = 1):
    """The application graph: `serve.run(build_app())`, or `serve run qformer.serving.ray_app:app`."""
    return Api.bind(CaptionModel.options(num_replicas=replicas).bind(model),
                    WildlifeModel.options(num_replicas=replicas).bind())


app = build_app()
