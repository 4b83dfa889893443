"""Prometheus metrics of the served models: per node, its latency and the sizes of its batches.

They go through Ray's own metrics (tagged with the deployment, replica and application, as Ray
tags its own), which every Ray node exports for Prometheus to scrape, as `ray_qformer_node_latency_seconds`
and `ray_qformer_node_batch_size`; `GET /metrics` on the API gathers those and the `ray_serve_`
families of every node in one page.
"""

from __future__ import annotations

from functools import cache

LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64]
FAMILIES = ("ray_qformer_", "ray_serve_")  # Ray exports an application's metrics with its own prefix


@cache
def _histograms():
    from ray.serve.metrics import Histogram

    latency = Histogram("qformer_node_latency_seconds", description="Seconds a graph node took per call (a batch "
                        "counts once)", boundaries=LATENCY_BOUNDARIES, tag_keys=("node",))
    batch = Histogram("qformer_node_batch_size", description="Requests per batch a graph node ran",
                      boundaries=BATCH_BOUNDARIES, tag_keys=("node",))
    return latency, batch


def record_latency(node: str, seconds: float) -> None:
    _histograms()[0].observe(seconds, tags={"node": node})


def record_batch(node: str, size: int) -> None:
    _histograms()[1].observe(size, tags={"node": node})


def gather(timeout_s: float = 2.0) -> str:
    """The qformer and Ray Serve metrics of every alive Ray node, as one Prometheus text page (each line
    tagged with its node's address by Ray)."""
    import urllib.request

    import ray

    lines: list[str] = []
    for node in ray.nodes():
        port = node.get("MetricsExportPort")
        if not node.get("Alive") or not port:
            continue
        address = f"http://{node['NodeManagerAddress']}:{int(port)}/metrics"
        try:
            with urllib.request.urlopen(address, timeout=timeout_s) as response:  # noqa: S310 -- Ray's own node
                text = response.read().decode("utf-8", "replace")
        except OSError as e:
            lines.append(f"# node {node['NodeManagerAddress']}: metrics not reachable ({e})")
            continue
        lines += [line for line in text.splitlines() if _metric_name(line).startswith(FAMILIES)]
    return "\n".join(lines) + "\n"


def _metric_name(line: str) -> str:
    """The metric a Prometheus text line is about: `# HELP name ...`, `# TYPE name ...` or `name{...} value`."""
    words = line.split(" ")
    return words[2] if line.startswith("# ") and len(words) > 2 else line
