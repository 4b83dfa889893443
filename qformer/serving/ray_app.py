"""The routed captioner and the wildlife pipeline as a Ray Serve application.

Each model is its own deployment, with its own CPUs and replicas, taking requests in adaptive
batches (`@serve.batch`); the ingress (`Api`) serves the HTTP API of `http_api.py` and calls them
through deployment handles. Locally, `qformer serve` starts it on this machine; on a cluster, the
same app runs from a Serve config (`serve deploy configs/serve_config.yaml`, KubeRay's RayService).

    build_app({"model": "default", "replicas": 1, "max_batch": 8, "ensemble": False})

With `ensemble`, the caption ensemble graph (`caption_ensemble.py`) runs node by node on the generic
graph deployment (`ray_graph.py`) behind `POST /ensemble`. The HTTP limits of `limits.py` run in
Ray's HTTP proxies (`serving/run.py` installs them).
"""

# no `from __future__ import annotations`: Ray Serve reads the batch methods' signatures
import asyncio
import time
from typing import Optional

from ray import serve
from ray.serve.handle import DeploymentHandle

from .http_api import build_api
from .metrics import gather, record_batch, record_latency
from .ray_graph import use_the_machines_cores
from .run import keep_replica_on_loopback
from .workers import CaptionWorker, WildlifeWorker

BATCH_WAIT_S = 0.01
DEFAULTS = {"model": "default", "replicas": 1, "max_batch": 8, "ensemble": False}


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32, graceful_shutdown_timeout_s=5)
class CaptionModel:
    def __init__(self, model: str = "default", max_batch: int = 8):
        keep_replica_on_loopback()
        use_the_machines_cores()
        self.worker = CaptionWorker(model)
        for method in (self.caption, self.ask):
            method.set_max_batch_size(max_batch)  # 1: batching off

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=BATCH_WAIT_S)
    async def caption(self, images: list) -> list:
        with _measured("caption", len(images)):
            return await asyncio.to_thread(self.worker.caption, images)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=BATCH_WAIT_S)
    async def ask(self, requests: list) -> list:
        with _measured("ask", len(requests)):
            return await asyncio.to_thread(self.worker.ask, requests)

    async def scores(self, image, texts: list) -> dict:
        with _measured("scores", 1):
            return await asyncio.to_thread(self.worker.scores, image, texts)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32, graceful_shutdown_timeout_s=5)
class WildlifeModel:
    def __init__(self, max_batch: int = 8):
        keep_replica_on_loopback()
        use_the_machines_cores()
        self.worker = WildlifeWorker()
        self.report.set_max_batch_size(max_batch)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=BATCH_WAIT_S)
    async def report(self, requests: list) -> list:
        with _measured("wildlife", len(requests)):
            return await asyncio.to_thread(self.worker.report, [i for i, _ in requests], [n for _, n in requests])


class _measured:
    """Records a model call's latency and batch size under its node name (`metrics.py`)."""

    def __init__(self, node: str, batch: int):
        self.node, self.batch = node, batch

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        record_latency(self.node, time.perf_counter() - self.start)
        record_batch(self.node, self.batch)


def _backend():
    return serve.get_replica_context().servable_object


async def _metrics() -> str:
    return await asyncio.to_thread(gather)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256, graceful_shutdown_timeout_s=5)
@serve.ingress(build_api(_backend, metrics=_metrics))
class Api:
    """The HTTP API (`http_api.py`) over the model deployments' handles."""

    def __init__(self, captioner: DeploymentHandle, wildlife: DeploymentHandle,
                 ensemble: Optional[DeploymentHandle] = None):
        keep_replica_on_loopback()
        self.captioner, self.wildlife_model, self.ensemble_graph = captioner, wildlife, ensemble

    async def caption(self, image) -> dict:
        return await self.captioner.caption.remote(image)

    async def ask(self, image, question: str) -> dict:
        return await self.captioner.ask.remote((image, question))

    async def scores(self, image, texts: list) -> dict:
        return await self.captioner.scores.remote(image, texts)

    async def wildlife(self, image, name: str) -> dict:
        return await self.wildlife_model.report.remote((image, name))

    async def ensemble(self, image) -> Optional[dict]:
        if self.ensemble_graph is None:
            return None
        (result,) = await self.ensemble_graph.remote([{"image": image}])
        return {**result["values"]["ranked"], "seconds": result["timings"]}


def build_app(args: Optional[dict] = None):
    """The application, from `args` (see `DEFAULTS`); also a Serve application builder:
    `serve run qformer.serving.ray_app:build_app model=default ensemble=true`."""
    settings = {**DEFAULTS, **(args or {})}
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown application argument(s) {unknown}; the arguments are {sorted(DEFAULTS)}")
    replicas, max_batch = int(settings["replicas"]), int(settings["max_batch"])
    ensemble = _truthy(settings["ensemble"])
    return Api.bind(CaptionModel.options(num_replicas=replicas).bind(settings["model"], max_batch),
                    WildlifeModel.options(num_replicas=replicas).bind(max_batch),
                    _ensemble_graph(settings["model"]) if ensemble else None)


def _ensemble_graph(model: str):
    from .caption_ensemble import caption_ensemble
    from .ray_graph import deploy_graph, nodes_of

    # the nodes' replicas share the machine's cores; a small reservation lets six of them start on two
    graph = caption_ensemble(model)
    options = {node.name: {"ray_actor_options": {"num_cpus": 0.1}} for node in nodes_of(graph.root)}
    return deploy_graph(graph, options)


def _truthy(value) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")
