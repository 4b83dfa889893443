"""Hostile clients against `qformer serve` on both engines (Ray Serve and BentoML), on 127.0.0.1:
every case is answered with a status and a sentence, memory stays within 2 GB of what it was, and
other clients are served throughout."""

import io
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image, ImageDraw

from .conftest import SAMPLES, descendants, post, server_rss_mib

ENGINES = ["ray", "bentoml"]
SCENE = (SAMPLES / "scene.png").read_bytes()
CAT = (SAMPLES / "chelsea.jpg").read_bytes()


@pytest.fixture(params=ENGINES)
def server(request):
    return request.getfixturevalue(f"{request.param}_server")


def served(url: str) -> bool:
    """The server still answers: its health check, and a real caption."""
    health = requests.get(f"{url}/healthz", timeout=10)
    caption = post(url, "/caption", CAT, "cat.jpg")
    return health.ok and caption.status_code == 200 and "cat" in caption.json()["text"]


def test_clients_that_stall_their_body_hold_no_model_and_are_cut_off(server):
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    stalled = []
    for _ in range(260):  # more than the ingress takes at once
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /caption HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 1000000\r\nx-request-timeout-seconds: -1\r\n\r\n--b\r\n" + b"x" * 100)
        stalled.append(s)
    try:
        assert all(served(url) for _ in range(3))
        time.sleep(12)  # past the pause a body may take
        for s in stalled[:10]:
            s.settimeout(10)
            assert s.recv(64).startswith(b"HTTP/1.1 408"), "a stalled upload is answered 408"
    finally:
        for s in stalled:
            s.close()
    assert served(url)


def test_an_endless_request_head_is_refused_at_16_kB(server):
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    sent = []

    def flood():
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        total = 0
        try:
            while total < 50 * 2**20:
                s.sendall(b"a" * 2**20)
                total += 2**20
        except OSError:
            pass
        sent.append(total)
        s.close()

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(sent) == 4 and max(sent) < 8 * 2**20, sent  # the server hung up long before 50 MB
    assert served(url)


def test_huge_images_in_small_files_stay_within_the_memory_budget(server):
    url, process = server
    scan = Image.new("1", (9400, 9400))  # 88 megapixels, under the pixel limit, in a few kB
    ImageDraw.Draw(scan).ellipse((2000, 2000, 6000, 6000), fill=1)
    data = io.BytesIO()
    scan.save(data, format="PNG")
    idle = server_rss_mib(process)
    peak, done = [idle], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], server_rss_mib(process))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: post(url, "/caption", data.getvalue(), "scan.png").status_code, range(8)))
    done.set()
    watcher.join()
    assert codes == [200] * 8
    assert peak[0] - idle < 2048, (idle, peak[0])


def test_a_refused_question_fails_alone_and_its_batch_mates_are_answered(server):
    url, _ = server
    questions = ["what is " * 75] + ["what colour is the circle?"] * 7  # 600 characters: over 128 tokens

    def ask(question):
        return post(url, "/ask", SCENE, "scene.png", question=question)

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(ask, questions))
    assert replies[0].status_code == 422 and "too long" in replies[0].json()["detail"]
    assert [r.status_code for r in replies[1:]] == [200] * 7


@pytest.mark.parametrize("clients", [32, 64])
def test_many_parallel_questions_all_succeed(server, clients):
    url, _ = server
    with ThreadPoolExecutor(clients) as pool:
        codes = list(pool.map(lambda _: post(url, "/ask", SCENE, "scene.png", question="how many shapes?").status_code,
                              range(clients)))
    assert codes == [200] * clients


def test_form_fields_are_text_and_images_are_uploads_never_urls(server):
    url, _ = server
    as_url = requests.post(f"{url}/caption", files={"image": (None, "http://127.0.0.1:9/cat.jpg")}, timeout=60)
    assert as_url.status_code == 422 and "URLs" in as_url.json()["detail"]
    assert post(url, "/ask", CAT, question="123").status_code == 200  # a number is a question, as typed
    nested = post(url, "/scores", CAT, texts='[["a cat", ["a cup"]]]').json()
    assert nested["texts"] == ['[["a cat", ["a cup"]]]']  # text, never parsed
    texts = ["a blue square and a red circle", "a green triangle"]
    readme_style = requests.post(f"{url}/scores", files=[("image", ("scene.png", SCENE)), ("texts", (None, texts[0])),
                                                        ("texts", (None, texts[1]))], timeout=60).json()
    assert readme_style["texts"] == texts and readme_style["scores"][0] > readme_style["scores"][1]


def test_malformed_requests_get_a_sentence(server):
    url, _ = server
    long_name = post(url, "/wildlife", CAT, "a" * 300 + ".jpg")
    assert long_name.status_code == 200 and len(long_name.json()["images"][0]["file"]) <= 255
    missing = requests.post(f"{url}/ask", files={"image": ("cat.jpg", CAT)}, timeout=60)
    assert missing.status_code == 422 and "'question' is missing" in missing.json()["detail"]
    no_boundary = requests.post(f"{url}/caption", data=b"xx", headers={"Content-Type": "multipart/form-data"},
                                timeout=60)
    assert no_boundary.status_code == 400 and "boundary" in no_boundary.json()["detail"]
    assert served(url)


def test_the_server_listens_on_the_loopback_address_only(server):
    _, process = server
    pids = {process.pid, *descendants(process.pid)}
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout.splitlines()
    ours = [line for line in listening if any(f"pid={pid}," in line for pid in pids)]
    assert ours, "the server's sockets are visible to ss"
    exposed = [line for line in ours if not any(a in line.split()[3] for a in ("127.0.0.1:", "[::ffff:127.0.0.1]:"))]
    assert exposed == [], exposed
