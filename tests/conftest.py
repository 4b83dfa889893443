"""Shared fixtures: tiny random models (no files needed) and real photos bundled with scikit-image."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

# Tests never reach for the network: a hub lookup fails at once instead of timing out.
# Set before anything imports huggingface_hub, which reads it once.
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import requests  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

import qformer  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture(scope="session")
def cat() -> Image.Image:
    return Image.fromarray(data.chelsea())


@pytest.fixture(scope="session")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="session")
def coffee() -> Image.Image:
    return Image.fromarray(data.coffee())


@pytest.fixture(scope="session")
def photos(cat, astronaut, coffee) -> list[Image.Image]:
    return [cat, astronaut, coffee]


def build(name: str = "tiny-random", seed: int = 0, **overrides) -> qformer.Blip2:
    torch.manual_seed(seed)
    return qformer.create_model(name, **overrides)


@pytest.fixture
def tiny() -> qformer.Blip2:
    return build().eval()


@pytest.fixture
def tiny_t5() -> qformer.Blip2:
    return build("tiny-random-t5").eval()


def random_photo(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))



def losses_for(model: qformer.Blip2, pixels, texts: list[str], stage: int = 2, prompts: list[str] | None = None,
               **extra) -> dict:
    """A training step's losses through the public path: the processor makes the tensors, the model takes them."""
    if stage == 1:
        ids, mask = model.processor.qformer_text(texts)
        return model(pixel_values=pixels, qformer_input_ids=ids, qformer_attention_mask=mask, stage=1, **extra)
    prompts = prompts if prompts is not None else [model.config.lm.prompt] * len(texts)
    return model(pixel_values=pixels, **model.processor.lm_training(prompts, texts), stage=stage, **extra)


# --- servers: `qformer serve` in a process of its own, on 127.0.0.1 only ---------------------------

def free_port() -> int:
    """A port nothing else here will take before the server binds it. Not one the system hands out
    (`bind(0)`): Ray starts a dozen processes whose sockets take ephemeral ports, and one of them once
    took the port picked for its own proxy. Below the ephemeral range and above Ray's worker ports
    (10002-19999), only another test could collide, and a port still bound is skipped."""
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 32768
    for port in np.random.default_rng().permutation(np.arange(20000, max(low, 20001))):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", int(port)))
            except OSError:
                continue
            return int(port)
    raise RuntimeError(f"no free port between 20000 and {low}")


def descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process below `root` (Ray's workers start sessions of their own)."""
    rows = [line.split(None, 2) for line in
            subprocess.run(["ps", "-ww", "-eo", "pid,ppid,args"], capture_output=True,
                           text=True).stdout.splitlines()[1:]]
    children: dict[int, list[tuple[int, str]]] = {}
    for pid, ppid, *args in rows:
        children.setdefault(int(ppid), []).append((int(pid), args[0] if args else ""))
    found, stack = {}, [root]
    while stack:
        for pid, args in children.get(stack.pop(), []):
            found[pid] = args
            stack.append(pid)
    return found


def alive(pids) -> list[int]:
    """The pids still running (a zombie waiting for its parent is not running)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            running.append(pid)
    return running


@contextmanager
def running_server(arguments: list[str], ready: str, timeout_s: int = 300):
    """`qformer serve --port P ARGUMENTS` on 127.0.0.1, yielding `(url, process)` once `GET ready`
    answers; whatever happens, nothing of it outlives the block. Its output goes to a file, which a
    failure to start shows."""
    port = free_port()
    url, spawned = f"http://127.0.0.1:{port}", {}
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen([sys.executable, "-m", "qformer", "serve", "--port", str(port), *arguments],
                                   stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            deadline = time.time() + timeout_s
            while time.time() < deadline and process.poll() is None:
                try:
                    if requests.get(f"{url}{ready}", timeout=2).ok:
                        break
                except requests.RequestException:  # not listening yet, or still starting
                    pass
                time.sleep(1)
            else:
                log.seek(0)
                pytest.fail(f"qformer serve {' '.join(arguments)} did not start within {timeout_s} s; its output "
                            f"ends: {log.read()[-3000:]}")
            spawned = descendants(process.pid)
            process.output = log  # for assert_stops_cleanly, which reads what the server said on its way out
            yield url, process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
            for pid in alive({**spawned, **descendants(process.pid)}):
                os.kill(pid, signal.SIGKILL)


def assert_stops_cleanly(process: subprocess.Popen, worker: str) -> None:
    """SIGTERM stops the server and every process it started (one of them named `worker`), quietly:
    no traceback in what it printed on the way out."""
    spawned = descendants(process.pid)
    assert any(worker in args for args in spawned.values()), spawned
    log = getattr(process, "output", None)
    start = log.seek(0, 2) if log else 0
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
    deadline = time.time() + 60
    while alive(spawned) and time.time() < deadline:
        time.sleep(1)
    assert alive(spawned) == [], {pid: spawned[pid] for pid in alive(spawned)}
    if log:
        log.seek(start)
        said = log.read()
        assert "Traceback" not in said and "CancelledError" not in said, said[-3000:]


def post(url: str, path: str, data: bytes, name: str = "photo.jpg", **form) -> requests.Response:
    return requests.post(f"{url}{path}", files={"image": (name, data)}, data=form, timeout=120)


@pytest.fixture(scope="session")
def ray_server():
    """`qformer serve` on Ray Serve, shared by the tests of its answers and of hostile clients."""
    pytest.importorskip("ray")
    with running_server([], "/healthz") as running:
        yield running


@pytest.fixture(scope="session")
def bentoml_server():
    """`qformer serve --engine bentoml --ensemble`, shared likewise."""
    pytest.importorskip("bentoml")
    with running_server(["--engine", "bentoml", "--ensemble"], "/readyz") as running:
        yield running


def server_rss_mib(process: subprocess.Popen) -> int:
    """Resident memory of a server and every process it started, in MiB."""
    total = 0
    for pid in [process.pid, *descendants(process.pid)]:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total // 1024
