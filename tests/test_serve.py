"""`qformer serve` on Ray Serve, on 127.0.0.1 only: answers, 50 concurrent requests, bad uploads get
a 4xx with a sentence while the server keeps serving, a killed replica comes back, and shutdown
leaves no process behind; and wildlife batch runs on Ray Data give the in-process results."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image

from .conftest import SAMPLES, assert_stops_cleanly, descendants, post, running_server

pytest.importorskip("ray")


@pytest.fixture
def server(ray_server):
    return ray_server


def test_caption_ask_and_wildlife(server):
    url, _ = server
    cat = (SAMPLES / "chelsea.jpg").read_bytes()
    caption = post(url, "/caption", cat).json()
    assert caption["source"] == "grounded" and "cat" in caption["text"]
    assert post(url, "/ask", (SAMPLES / "scene.png").read_bytes(), "scene.png",
                question="what colour is the circle?").json()["source"] == "bridge"
    report = post(url, "/wildlife", cat, "chelsea.jpg").json()
    assert report["info"]["format_version"] == "1.6" and report["images"][0]["file"] == "chelsea.jpg"
    # the bridge scores texts; it knows drawings like its corpus, not photos
    texts = ["a blue square and a red circle", "a green triangle"]
    scores = requests.post(f"{url}/scores", files={"image": ("scene.png", (SAMPLES / "scene.png").read_bytes())},
                           data={"texts": texts}, timeout=60).json()
    assert scores["texts"] == texts and scores["scores"][0] > scores["scores"][1]
    assert requests.post(f"{url}/scores", files={"image": ("cat.jpg", cat)}, timeout=60).status_code == 422
    paths = requests.get(f"{url}/openapi.json", timeout=10).json()["paths"].keys()
    assert paths >= {"/caption", "/ask", "/scores", "/wildlife", "/ensemble", "/metrics"}
    assert post(url, "/ensemble", cat).status_code == 404  # served with --ensemble only


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
    for question in ("  ", ""):  # blank, and empty (which a form sends as no field at all)
        refused = post(url, "/ask", (SAMPLES / "chelsea.jpg").read_bytes(), question=question)
        assert refused.status_code == 422 and isinstance(refused.json()["detail"], str), refused.text
        assert "question" in refused.json()["detail"], refused.text
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


def test_shutdown_leaves_no_process_behind():
    with running_server(["--model", "grounded"], "/healthz") as (_, process):
        assert_stops_cleanly(process, "ServeReplica:qformer")


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


def test_the_cluster_config_names_the_app_builder_and_its_deployments():
    import yaml

    from qformer.serving.ray_app import DEFAULTS, build_app

    config = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / "serve_config.yaml").read_text())
    (app,) = config["applications"]
    assert app["import_path"] == "qformer.serving.ray_app:build_app" and set(app["args"]) <= set(DEFAULTS)
    assert {d["name"] for d in app["deployments"]} == {"CaptionModel", "WildlifeModel", "Api"}
    assert config["http_options"]["request_timeout_s"] > 0
    with pytest.raises(ValueError, match="unknown application argument"):
        build_app({"modle": "default"})
