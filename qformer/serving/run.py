"""`qformer serve`: the Ray Serve app (or the BentoML services) on this machine, until interrupted;
nothing left running after.

Ray's own servers (its GCS, raylets, workers and their metrics export) listen on every interface
unless the node's address is the loopback one; `start_ray()` starts a cluster of this machine alone
on 127.0.0.1, so only the HTTP port chosen with `--host` is reachable from elsewhere. A cluster is
joined only when `RAY_ADDRESS` names one.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

# Ray's switch for a node that talks to no other machine: its node address, and every server's
# bind address, become the loopback one. Read when ray is imported, and by the processes it starts.
LOCAL_ONLY_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Ray Serve calls this in each HTTP proxy before it starts listening (limits.py)
PROXY_HOOK = {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "qformer.serving.limits:ray_proxy_middlewares"}
REQUEST_TIMEOUT_S = 300  # a model call that takes longer than this is cut off with a 408
KEEP_ALIVE_S = 5


def start_ray(num_cpus: int | None = None) -> None:
    """Join the cluster that `RAY_ADDRESS` names (Ray's own setting), or else start one of this
    machine alone, bound to 127.0.0.1: never one that another command (or a server still shutting
    down) left behind."""
    os.environ.update(PROXY_HOOK)
    quiet = {"include_dashboard": False, "configure_logging": False, "log_to_driver": False}
    if os.environ.get("RAY_ADDRESS"):
        import ray

        ray.init(**quiet)
        return
    os.environ[LOCAL_ONLY_SWITCH] = "0"
    if "ray" in sys.modules:  # imported already (a test, a notebook): tell its constants too
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    import ray

    ray.init(address="local", num_cpus=num_cpus, **quiet)


def keep_replica_on_loopback() -> None:
    """Ray Serve binds each replica's inter-deployment gRPC server to every interface ("[::]:0")
    whatever the node's address; on a cluster of this machine alone, bind it to 127.0.0.1. Each
    deployment calls this in its `__init__`, which Ray runs before it starts that server."""
    if os.environ.get(LOCAL_ONLY_SWITCH) != "0":
        return
    from ray.serve._private import replica

    bind = getattr(replica, "add_port_to_grpc_server", None)
    if bind is None or getattr(bind, "on_loopback", False):
        return

    def on_loopback(server, address: str):
        return bind(server, address.replace("[::]", "127.0.0.1", 1))

    on_loopback.on_loopback = True
    replica.add_port_to_grpc_server = on_loopback


def serve_locally(host: str = "127.0.0.1", port: int = 8000, model: str = "default", replicas: int = 1,
                  max_batch: int = 8, num_cpus: int | None = None, ensemble: bool = False) -> None:
    start_ray(num_cpus)
    import ray
    from ray import serve

    from .ray_app import build_app

    stop, ready = threading.Event(), threading.Event()

    def on_signal(*_):
        stop.set()
        if not ready.is_set():  # still starting: leave serve.run, and shut down what it started
            raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):  # after Ray's start-up, which sets handlers of its own
        signal.signal(signum, on_signal)
    try:
        serve.start(http_options={"host": host, "port": port, "request_timeout_s": REQUEST_TIMEOUT_S,
                                  "keep_alive_timeout_s": KEEP_ALIVE_S})
        serve.run(build_app({"model": model, "replicas": replicas, "max_batch": max_batch, "ensemble": ensemble}),
                  name="qformer", route_prefix="/")
        ready.set()
        routes = "POST /caption, /ask, /scores, /wildlife" + (", /ensemble" if ensemble else "")
        print(f"serving on http://{host}:{port} ({routes}; GET /healthz, /metrics, /docs)", flush=True)
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        ready.set()  # a second signal during the shutdown below does not interrupt it
        serve.shutdown()
        ray.shutdown()


GRACEFUL_SHUTDOWN_S = 10


def serve_with_bentoml(host: str = "127.0.0.1", port: int = 8000, model: str = "default", max_batch: int = 8,
                       ensemble: bool = False) -> None:
    """BentoML's own server takes over this process: its signal handling stops every service's worker."""
    # without a graceful-shutdown limit, BentoML's entry worker waited forever on SIGTERM after a load test
    command = [sys.executable, "-m", "bentoml", "serve", "qformer.serving.bento_app:Api", "--host", host,
               "--port", str(port), "--timeout-graceful-shutdown", str(GRACEFUL_SHUTDOWN_S)]
    settings = {"QFORMER_SERVE_MODEL": model, "QFORMER_SERVE_MAX_BATCH": str(max_batch),
                "QFORMER_SERVE_ENSEMBLE": "1" if ensemble else "0"}
    os.execve(sys.executable, command, {**os.environ, **settings})
