"""The web demo, served on localhost: a real browser (Debian's chromium through playwright) uploads a
photo and reads the caption and the wildlife table; 20 concurrent API calls; a corrupt upload.
The browser's screenshot is kept in runs/test-artifacts/."""

import os
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from qformer.demo.app import MAX_UPLOAD, build_app

ROOT = Path(__file__).resolve().parent.parent
CAT = str(ROOT / "samples" / "chelsea.jpg")
ARTIFACTS = ROOT / "runs" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    app = build_app("default")
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, max_file_size=MAX_UPLOAD,
               show_error=False, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


def test_caption_and_wildlife_through_the_api(client):
    caption, answer, gallery, status = client.predict(handle_file(CAT), "default", "what is this?", 20, 1,
                                                      api_name="/caption")
    assert "cat" in caption and answer and status.startswith("Done.") and "grounded" in status and "cat" in status
    assert len(gallery) == 1  # the upload with its boxes: a grounded answer shows no attention of the bridge
    caption, _, gallery, status = client.predict(handle_file(str(ROOT / "samples" / "scene.png")), "default", "", 20, 1,
                                                 api_name="/caption")
    assert "bridge" in status and len(gallery) >= 2  # the upload, then where the bridge's queries looked
    boxes, cards, table, report, found = client.predict(handle_file(CAT), "", 0.5, api_name="/wildlife")
    assert "domestic cat" in cards and table["data"][0][1] == "domestic cat"
    assert Path(report).read_text().startswith("{") and boxes


def test_corrupt_and_non_image_uploads_get_a_message_and_the_server_keeps_serving(client, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    for bad in (corrupt, text):
        *_, status = client.predict(handle_file(str(bad)), "default", "", 5, 1, api_name="/caption")
        assert status.startswith("**Could not read the upload:**") and "Traceback" not in status
        *_, status = client.predict(handle_file(str(bad)), "", 0.5, api_name="/wildlife")
        assert status.startswith("**Could not read the upload:**")
    *_, status = client.predict(handle_file(CAT), "", 0.5, api_name="/wildlife")
    assert status == "Found 1."


def test_decompression_bombs_and_oversized_uploads_are_refused(client, tmp_path):
    bomb = tmp_path / "bomb.png"  # 96 megapixels of one colour: a few hundred KB on disk
    Image.new("L", (12_000, 8_000)).save(bomb, optimize=False, compress_level=9)
    *_, status = client.predict(handle_file(str(bomb)), "default", "", 5, 1, api_name="/caption")
    assert status.startswith("**Could not read the upload:**") and "pixels" in status, status
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(b"\xff\xd8" + os.urandom(21 * 2**20))  # over the 20 MB limit
    with pytest.raises(Exception, match="(?i)size|large|exceed"):  # the upload route refuses it
        client.predict(handle_file(str(huge)), "", 0.5, api_name="/wildlife")
    assert client.predict(handle_file(CAT), "", 0.5, api_name="/wildlife")[-1] == "Found 1."  # still serving


def test_twenty_concurrent_requests_all_succeed(server):
    # the answers only: each caption also returns a gallery of images, whose 180 downloads are not the point
    client = Client(server, verbose=False, download_files=False)

    def one(k):
        if k % 2:
            return client.predict(handle_file(CAT), "", 0.5, api_name="/wildlife")[-1]
        return client.predict(handle_file(CAT), "default", "", 8, 1, api_name="/caption")[-1]

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(one, range(20)))
    assert [s.split(" ")[0] for s in statuses] == ["Done." if k % 2 == 0 else "Found" for k in range(20)]
    assert all(s == "Found 1." for s in statuses[1::2])
    assert client.predict(handle_file(CAT), "", 0.5, api_name="/wildlife")[-1] == "Found 1."  # still up


def settle(page):
    # Gradio fades outputs in after a result arrives; a screenshot taken at once shows them greyed out
    page.wait_for_timeout(1500)


def test_browser_uploads_a_photo_and_reads_the_page(server):
    assert Path(CHROMIUM).exists(), "needs Debian's chromium: apt install chromium (scripts/setup.sh does, as root)"
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(server)
        page.locator("#caption-image input[type=file]").set_input_files(CAT)
        page.locator("#caption-run").click()
        expect(page.locator("#caption-status")).to_contain_text("Done", timeout=120_000)
        caption = page.locator("#caption-out textarea").input_value()
        assert caption.strip()
        settle(page)
        page.screenshot(path=str(ARTIFACTS / "demo-caption.png"), full_page=True)
        page.get_by_role("tab", name="Wildlife").click()
        page.locator("#wildlife-image input[type=file]").set_input_files(CAT)
        page.locator("#wildlife-run").click()
        expect(page.locator("#wildlife-status")).to_contain_text("Found 1", timeout=120_000)
        expect(page.locator("#wildlife-table")).to_contain_text("domestic cat")
        expect(page.locator("#wildlife-cards")).to_contain_text("Felis catus")
        expect(page.locator("#wildlife-boxes img")).to_be_visible()
        settle(page)
        page.screenshot(path=str(ARTIFACTS / "demo-wildlife.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "demo-wildlife.png").stat().st_size > 10_000


def test_the_model_field_takes_only_offered_models_and_reveals_no_paths(client, tmp_path):
    from gradio_client.exceptions import AppError

    import qformer.demo.app as app

    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "config.json").write_text("{}")
    answers = []
    for typed in (str(tmp_path / "secret"), str(tmp_path / "nowhere"), "/etc", "../../etc/passwd", "owner/repo"):
        with pytest.raises(AppError) as refused:  # the dropdown offers a fixed list, and Gradio holds to it
            client.predict(handle_file(CAT), typed, "", 5, 1, api_name="/caption")
        answers.append(str(refused.value).replace(typed, "TYPED"))
        # behind the dropdown, the same rule again, in our words
        *_, status = app.caption_and_ask(app.Models("default"), CAT, typed, "", 5, 1)
        answers.append(status)
        assert "does not offer that model" in status and "TYPED" not in status
    assert len(set(answers)) == 2, "an existing and a missing folder get the same answers"


def test_models_are_cached_by_what_they_resolve_to_bounded_and_locked_one_by_one(tmp_path, monkeypatch):
    import threading

    import qformer.demo.app as app

    for name in ("a", "b", "c", "d"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    loads, a_loading, release_a = [], threading.Event(), threading.Event()

    def fake_create_model(key):
        loads.append(key)
        if key.endswith("/a") and loads.count(key) == 2:  # the second load of a: hold it until told
            a_loading.set()
            release_a.wait(30)
        return type("Model", (), {"eval": lambda self: self})()

    monkeypatch.setattr(app.qformer, "create_model", fake_create_model)
    models = app.Models("default", [str(tmp_path / n) for n in ("a", "b", "c", "d")], max_loaded=2)
    a, c = str(tmp_path / "a"), str(tmp_path / "c")
    first = models.bridge(a)
    assert models.bridge(a + "/") is first and models.bridge(a.replace("/a",
                                                                       "//a")) is first and models.bridge("a") is first
    assert loads == [a], "one model, however its path is written"
    models.bridge(str(tmp_path / "b"))
    models.bridge(c)
    assert len(loads) == 3
    loader = threading.Thread(target=models.bridge, args=(a,))
    loader.start()  # a was freed (least recently used of three, two kept): it loads again, slowly
    assert a_loading.wait(10) and loads.count(a) == 2
    other = threading.Thread(target=models.bridge, args=(str(tmp_path / "d"),))  # not loaded yet: takes its own lock
    other.start()
    other.join(10)
    served_while_a_loads = not other.is_alive() and not release_a.is_set()
    release_a.set()
    loader.join(10)
    assert served_while_a_loads, "one model's slow load blocked another model's load"
    with pytest.raises(app.ModelNotAllowed):
        models.bridge(str(tmp_path))
