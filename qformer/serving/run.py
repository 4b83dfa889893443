"""`qformer serve`: the Ray Serve app on this machine, until interrupted; nothing left running after."""

from __future__ import annotations

import signal
import threading


def serve_locally(host: str = "127.0.0.1", port: int = 8000, model: str = "default", replicas: int = 1,
                  num_cpus: int | None = None) -> None:
    import ray
    from ray import serve

    from .ray_app import build_app

    ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    stop = threading.Event()
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_app(model, replicas), name="qformer", route_prefix="/")
        for signum in (signal.SIGINT, signal.SIGTERM):  # after Ray's start-up, which sets handlers of its own
            signal.signal(signum, lambda *_: stop.set())
        print(f"serving on http://{host}:{port} (POST /caption, /ask, /wildlife; GET /healthz, /docs)", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
