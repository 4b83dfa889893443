"""Serving throughput and latency on this machine, in one run: the same photo captioned (routed
default) and reported (wildlife) in-process from client threads, and through `qformer serve` on Ray
Serve and on BentoML (HTTP on 127.0.0.1), each with adaptive batching on (up to 8) and off, at 1, 4
and 16 concurrent clients.

    PYTHONPATH=.. python serve.py [--requests 48]        (from bench/)
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import torch
from common import environment

from qformer.grounded import load_captioner
from qformer.processing.images import load_image
from qformer.wildlife import WildlifePipeline

PHOTO = Path(__file__).resolve().parent.parent / "samples" / "chelsea.jpg"
CLIENTS = (1, 4, 16)


def measure(call, clients: int, count: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p95 ms) of `count` calls from `clients` threads."""
    def timed(_):
        begin = time.perf_counter()
        call()
        return (time.perf_counter() - begin) * 1e3

    call()  # warm
    begin = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(pool.map(timed, range(count)))
    seconds = time.perf_counter() - begin
    return count / seconds, statistics.median(latencies), latencies[int(0.95 * (len(latencies) - 1))]


SERVERS = {"Ray Serve": ("ray", "/healthz"), "BentoML": ("bentoml", "/readyz")}


def start_server(engine: str, max_batch: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name, ready = SERVERS[engine]
    log = tempfile.NamedTemporaryFile("w+", prefix="qformer-serve-", suffix=".log", delete=False)
    process = subprocess.Popen([sys.executable, "-m", "qformer", "serve", "--port", str(port), "--engine", name,
                                "--max-batch", str(max_batch)], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if requests.get(f"{url}{ready}", timeout=2).ok:
                return process, url
        except requests.RequestException:
            pass
        time.sleep(1)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError(f"{engine} (--max-batch {max_batch}) did not start; its output: "
                       f"{Path(log.name).read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then wait until every process the server started is gone: the next one starts on a
    quiet machine."""
    table = subprocess.run(["ps", "-ww", "-eo", "pid,ppid"], capture_output=True, text=True).stdout.split()[2:]
    children: dict[int, list[int]] = {}
    for pid, ppid in zip(table[::2], table[1::2]):
        children.setdefault(int(ppid), []).append(int(pid))
    spawned, stack = set(), [process.pid]
    while stack:
        for pid in children.get(stack.pop(), []):
            spawned.add(pid)
            stack.append(pid)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
    deadline = time.time() + 90
    while any(Path(f"/proc/{pid}").exists() for pid in spawned) and time.time() < deadline:
        time.sleep(1)
    for pid in spawned:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48)
    args = parser.parse_args()
    data = PHOTO.read_bytes()
    rows = []
    captioner, pipeline = load_captioner("default"), WildlifePipeline.default()
    local = {"caption": lambda: captioner.caption([load_image(data)]), "wildlife": lambda: pipeline([load_image(data)])}
    for endpoint, call in local.items():
        for clients in CLIENTS:
            rows.append(("in-process", endpoint, clients, *measure(call, clients, args.requests)))
    for engine in SERVERS:
        for max_batch in (8, 1):
            label = f"{engine} (HTTP, {'batches of up to 8' if max_batch > 1 else 'no batching'})"
            process, url = start_server(engine, max_batch)
            try:
                for endpoint in local:
                    def call(endpoint=endpoint):
                        response = requests.post(f"{url}/{endpoint}", files={"image": ("chelsea.jpg", data)},
                                                 timeout=300)
                        response.raise_for_status()

                    for clients in CLIENTS:
                        rows.append((label, endpoint, clients, *measure(call, clients, args.requests)))
            finally:
                stop(process)
    print(environment(torch.device("cpu")) + f" | {args.requests} requests per row, the cat photo")
    print("\n| engine | endpoint | clients | requests/s | p50 ms | p95 ms |")
    print("|---|---|---:|---:|---:|---:|")
    for engine, endpoint, clients, rate, p50, p95 in sorted(rows, key=lambda r: (r[1], r[2], r[0])):
        print(f"| {engine} | {endpoint} | {clients} | {rate:.1f} | {p50:.0f} | {p95:.0f} |")


if __name__ == "__main__":
    main()
