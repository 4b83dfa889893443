"""`qformer serve`: the Ray Serve app (or the BentoML services) on this machine, until interrupted;
nothing left running after."""

from __future__ import annotations

import os
import signal
import sys
import threading


def serve_locally(host: str = "127.0.0.1", port: int = 8000, model: str = "default", replicas: int = 1,
                  num_cpus: int | None = None, ensemble: bool = False) -> None:
    import ray
    from ray import serve

    from ..grounded.loading import CAPTIONER_PRESETS
    from .ray_app import build_app, build_ensemble_app

    # a cluster of its own, never one that another command (or a server still shutting down) left behind
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    stop = threading.Event()
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_app(model, replicas), name="qformer", route_prefix="/")
        routes = "POST /caption, /ask, /scores, /wildlife; GET /healthz, /metrics, /docs"
        if ensemble:  # the captioner presets' bridge is the shipped default
            serve.run(build_ensemble_app("default" if model in CAPTIONER_PRESETS else model), name="ensemble",
                      route_prefix="/ensemble")
            routes += "; POST /ensemble/"
        for signum in (signal.SIGINT, signal.SIGTERM):  # after Ray's start-up, which sets handlers of its own
            signal.signal(signum, lambda *_: stop.set())
        print(f"serving on http://{host}:{port} ({routes})", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()


GRACEFUL_SHUTDOWN_S = 10


def serve_with_bentoml(host: str = "127.0.0.1", port: int = 8000, model: str = "default", ensemble: bool = False
                       ) -> None:
    """BentoML's own server takes over this process: its signal handling stops every service's worker."""
    # without a graceful-shutdown limit, BentoML's entry worker waited forever on SIGTERM after a load test
    command = [sys.executable, "-m", "bentoml", "serve", "qformer.serving.bento_app:Api", "--host", host,
               "--port", str(port), "--timeout-graceful-shutdown", str(GRACEFUL_SHUTDOWN_S)]
    settings = {"QFORMER_SERVE_MODEL": model, "QFORMER_SERVE_ENSEMBLE": "1" if ensemble else "0"}
    os.execve(sys.executable, command, {**os.environ, **settings})
