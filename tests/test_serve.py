"""`qformer serve` on Ray Serve, on 127.0.0.1 only: answers, 50 concurrent requests, bad uploads get
a 4xx with a sentence while the server keeps serving, a killed replica comes back, and shutdown
leaves no process behind; and wildlife batch runs on Ray Data give the in-process results."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image

pytest.importorskip("ray")

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process below `root` (Ray's workers start sessions of their own)."""
    rows = [line.split(None, 2) for line in
            subprocess.run(["ps", "-ww", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout.splitlines()[1:]]
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
    """SIGTERM stops the server and every process it started (one of them named `worker`)."""
    spawned = descendants(process.pid)
    assert any(worker in args for args in spawned.values()), spawned
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
    deadline = time.time() + 60
    while alive(spawned) and time.time() < deadline:
        time.sleep(1)
    assert alive(spawned) == [], {pid: spawned[pid] for pid in alive(spawned)}


@pytest.fixture(scope="module")
def server():
    with running_server([], "/healthz") as running:
        yield running


def post(url: str, path: str, data: bytes, name: str = "photo.jpg", **form) -> requests.Response:
    return requests.post(f"{url}{path}", files={"image": (name, data)}, data=form, timeout=120)


def test_caption_ask_and_wildlife(server):
    url, _ = server
    cat = (SAMPLES / "chelsea.jpg").read_bytes()
    caption = post(url, "/caption", cat).json()
    assert caption["source"] == "grounded" and "cat" in caption["text"]
    assert post(url, "/ask", (SAMPLES / "scene.png").read_bytes(), "scene.png",
                question="what colour is the circle?").json()["source"] == "bridge"
    report = post(url, "/wildlife", cat, "chelsea.jpg").json()
    assert report["info"]["format_version"] == "1.6" and report["images"][0]["file"] == "chelsea.jpg"
    scores = requests.post(f"{url}/scores", files={"image": ("cat.jpg", cat)}, data={"texts": ["a cat", "a cup"]},
                           timeout=60).json()
    assert scores["texts"] == ["a cat", "a cup"] and len(scores["scores"]) == 2
    assert requests.post(f"{url}/scores", files={"image": ("cat.jpg", cat)}, timeout=60).status_code == 422
    paths = requests.get(f"{url}/openapi.json", timeout=10).json()["paths"].keys()
    assert paths >= {"/caption", "/ask", "/scores", "/wildlife", "/metrics"}


def test_prometheus_metrics_give_each_nodes_latency_and_batch_sizes(server):
    url, _ = server
    post(url, "/caption", (SAMPLES / "chelsea.jpg").read_bytes())
    deadline, page = time.time() + 90, ""
    while time.time() < deadline:  # Ray reports a replica's metrics every few seconds
        page = requests.get(f"{url}/metrics", timeout=30).text
        if 'ray_qformer_node_batch_size_count{' in page and 'node="caption"' in page:
            break
        time.sleep(3)
    latency = [line for line in page.splitlines() if line.startswith("ray_qformer_node_latency_seconds_count")]
    assert any('node="caption"' in line and 'deployment="CaptionModel"' in line for line in latency), page[-2000:]
    assert "# TYPE ray_qformer_node_batch_size histogram" in page


def test_fifty_concurrent_requests_all_succeed(server):
    url, _ = server
    cat = (SAMPLES / "chelsea.jpg").read_bytes()

    def one(k: int) -> int:
        return post(url, "/wildlife" if k % 2 else "/caption", cat).status_code

    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(one, range(50)))
    assert codes == [200] * 50


def test_bad_uploads_get_a_4xx_with_a_sentence_and_the_server_keeps_serving(server):
    url, _ = server
    bomb = io.BytesIO()
    Image.new("1", (12000, 8000)).save(bomb, format="PNG")  # 96 megapixels in a few kB
    cases = {"notes.txt": (b"not a photo", 400), "corrupt.jpg": (b"\xff\xd8\xff\xe0 truncated", 400),
             "bomb.png": (bomb.getvalue(), 400), "huge.jpg": (b"\0" * (21 * 2**20), 413)}
    for name, (data, code) in cases.items():
        response = post(url, "/caption", data, name)
        assert response.status_code == code, (name, response.text)
        assert len(response.json()["detail"]) > 20
    assert post(url, "/ask", (SAMPLES / "chelsea.jpg").read_bytes(), question="  ").status_code == 422
    assert post(url, "/caption", (SAMPLES / "chelsea.jpg").read_bytes()).status_code == 200


def test_a_killed_replica_is_restarted_and_later_requests_succeed(server):
    url, process = server
    (pid,) = [pid for pid, args in descendants(process.pid).items() if "ServeReplica:qformer:CaptionModel" in args]
    os.kill(pid, signal.SIGKILL)
    cat = (SAMPLES / "chelsea.jpg").read_bytes()
    deadline, codes = time.time() + 180, []
    while time.time() < deadline:
        try:
            codes.append(post(url, "/caption", cat).status_code)
        except requests.RequestException:
            codes.append(None)
        if codes[-1] == 200:
            break
        time.sleep(2)
    assert codes[-1] == 200, codes
    assert [post(url, "/caption", cat).status_code for _ in range(5)] == [200] * 5


def test_shutdown_leaves_no_process_behind(server):
    assert_stops_cleanly(server[1], "ServeReplica:qformer")


def test_ray_data_batch_run_gives_the_in_process_results(tmp_path, cat):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg", "astronaut.jpg"):
        (photos / name).write_bytes((SAMPLES / name).read_bytes())
    cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "mirrored.png")
    (photos / "broken.jpg").write_bytes(b"not a photo")
    outputs = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.json"
        run = subprocess.run([sys.executable, "-m", "qformer", "wildlife", str(photos), "--out", str(out),
                              "--engine", engine, "--actors", "2"], capture_output=True, text=True, timeout=600)
        assert run.returncode == 1, run.stderr[-2000:]  # one unreadable file, reported; the others done
        outputs[engine] = json.loads(out.read_text())
    assert outputs["ray"]["images"] == outputs["local"]["images"]
    assert outputs["ray"]["info"]["detector"] == outputs["local"]["info"]["detector"]
    assert subprocess.run([sys.executable, "-m", "qformer", "wildlife", str(photos), "--engine", "ray"],
                          capture_output=True, text=True, timeout=120).returncode == 2  # needs --out


def test_the_cluster_config_names_the_app_and_its_deployments():
    import importlib

    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / "serve_config.yaml").read_text())
    app, ensemble = config["applications"]
    for application in (app, ensemble):
        module, name = application["import_path"].split(":")
        assert getattr(importlib.import_module(module), name) is not None
    assert {d["name"] for d in app["deployments"]} == {"CaptionModel", "WildlifeModel", "Api"}
    assert ensemble["route_prefix"] == "/ensemble"
