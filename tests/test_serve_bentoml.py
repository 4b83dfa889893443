"""`qformer serve --engine bentoml`, on 127.0.0.1 only: the same endpoints as the Ray Serve app from
BentoML services composed with `bentoml.depends`, 4xx with a sentence for bad input, concurrent
requests, Prometheus metrics with adaptive batch sizes, nothing left behind; and `bentoml build`."""

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

pytest.importorskip("bentoml")

from .conftest import SAMPLES, assert_stops_cleanly, post, running_server  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(bentoml_server):
    return bentoml_server


def test_the_endpoints_answer_as_on_ray_serve(server):
    url, _ = server
    cat = (SAMPLES / "chelsea.jpg").read_bytes()
    caption = post(url, "/caption", cat).json()
    assert caption["source"] == "grounded" and "cat" in caption["text"]
    answer = post(url, "/ask", (SAMPLES / "scene.png").read_bytes(), "scene.png", question="what colour is the circle?")
    assert answer.json()["source"] == "bridge"
    texts = ["a blue square and a red circle", "a green triangle"]  # the bridge knows drawings like its corpus
    scores = post(url, "/scores", (SAMPLES / "scene.png").read_bytes(), "scene.png", texts=texts).json()
    assert scores["texts"] == texts and scores["scores"][0] > scores["scores"][1]
    report = post(url, "/wildlife", cat, "chelsea.jpg").json()
    assert report["info"]["format_version"] == "1.6" and report["images"][0]["file"] == "chelsea.jpg"


def test_the_ensemble_graph_is_a_service_of_its_own_with_the_in_process_answer(server):
    from qformer.serving.caption_ensemble import GENERATORS, caption_ensemble

    url, process = server
    image = SAMPLES / "scene.png"
    served = post(url, "/ensemble", image.read_bytes(), "scene.png")
    assert served.status_code == 200, served.text
    expected = caption_ensemble("default")(image=str(image))["ranked"]
    served_candidates = {c["generator"]: c for c in served.json()["candidates"]}
    expected_candidates = {c["generator"]: c for c in expected["candidates"]}
    assert served_candidates.keys() == expected_candidates.keys() == GENERATORS.keys()
    # greedy and beam search are exact; a sample may differ with the worker's thread count
    assert served_candidates["greedy"] == expected_candidates["greedy"]
    assert served_candidates["beam"] == expected_candidates["beam"]
    assert post(url, "/ensemble", b"not a photo", "notes.txt").status_code == 400


def test_bad_input_gets_a_4xx_with_a_sentence_and_concurrent_requests_succeed(server):
    url, _ = server
    cases = {"notes.txt": (b"not a photo", 400), "corrupt.jpg": (b"\xff\xd8\xff\xe0 truncated", 400),
             "huge.jpg": (b"\0" * (21 * 2**20), 413)}
    for name, (data, code) in cases.items():
        response = post(url, "/caption", data, name)
        assert response.status_code == code, (name, response.text)
        assert len(response.text) > 30
    for question in ("  ", ""):  # blank, and empty (which a form sends as no field at all)
        refused = post(url, "/ask", (SAMPLES / "chelsea.jpg").read_bytes(), question=question)
        assert refused.status_code == 422 and isinstance(refused.json()["detail"], str), refused.text
        assert "question" in refused.json()["detail"], refused.text
    cat = (SAMPLES / "chelsea.jpg").read_bytes()
    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(lambda k: post(url, "/wildlife" if k % 2 else "/caption", cat).status_code, range(20)))
    assert codes == [200] * 20
    page = requests.get(f"{url}/metrics", timeout=30).text
    assert "bentoml_service_adaptive_batch_size" in page and 'service_name="CaptionService"' in page


def test_shutdown_leaves_no_process_behind():
    with running_server(["--engine", "bentoml", "--model", "grounded"], "/readyz") as (_, process):
        assert_stops_cleanly(process, "CaptionService")


def test_bentoml_builds_a_bento_from_the_bentofile(tmp_path):
    context = tmp_path / "context"
    (context / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "bentofile.yaml", context)
    shutil.copy(ROOT / "scripts" / "bento_setup.sh", context / "scripts")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(context / "dist"), str(ROOT)], check=True, timeout=300)
    env = {"BENTOML_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    built = subprocess.run([sys.executable, "-m", "bentoml", "build", "."], capture_output=True, text=True,
                           timeout=300, env=env, cwd=context)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (bento,) = [p for p in (tmp_path / "home" / "bentos" / "qformer").iterdir() if p.name != "latest"]
    manifest = (bento / "bento.yaml").read_text()
    assert "qformer.serving.bento_app:Api" in manifest and "CaptionService" in manifest
    assert (bento / "env" / "python" / "wheels" / "qformer_bridge-0.1.0-py3-none-any.whl").is_file()
