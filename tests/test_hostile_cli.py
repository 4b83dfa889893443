"""The command line under bad usage and hostile files: a sentence and the right exit code (2 usage,
1 unreadable input), nothing replaced without being asked, bounded memory, a terminal left clean."""

import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from PIL import Image

import qformer
from qformer.cli.main import main, printable


@pytest.fixture
def photo(tmp_path, cat):
    path = tmp_path / "cat.jpg"
    cat.save(path)
    return str(path)


def qformer_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qformer", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("flags, said", [
    (["--num-beams", "0"], "--num-beams: must be at least 1, got 0"),
    (["--max-new-tokens", "-3"], "--max-new-tokens: must be at least 1"),
    (["--max-new-tokens", "many"], "'many' is not a whole number"),
    (["--max-new-tokens", "1000000000"], "--max-new-tokens: must be at most 1024"),  # a KV cache per token
    (["--num-beams", "100000"], "--num-beams: must be at most 16"),
])
def test_bad_numbers_are_usage_errors(photo, capsys, flags, said):
    with pytest.raises(SystemExit) as exit_info:
        main(["caption", photo, "--model", "tiny-random", *flags])
    assert exit_info.value.code == 2 and said in capsys.readouterr().err


@pytest.mark.parametrize("device, said", [("bogus", "is not a device"), ("cuda:7", "is not available")])
def test_a_bad_device_is_a_usage_error(photo, capsys, device, said):
    assert main(["caption", photo, "--model", "tiny-random", "--device", device]) == 2
    assert said in capsys.readouterr().err
    assert main(["wildlife", photo, "--device", device]) == 2


def test_control_characters_from_the_model_never_reach_the_terminal(photo, capsys, monkeypatch):
    raw = "a cat\x00\x16\x1b[2J\u202eevil"
    monkeypatch.setattr(qformer.Blip2, "ask", lambda self, images, questions, **kw: [raw])
    assert main(["ask", photo, "what?", "--model", "tiny-random"]) == 0
    out = capsys.readouterr().out
    assert all(unicodedata.category(c)[0] != "C" for c in out.rstrip("\n"))
    assert "a cat\\x00\\x16\\x1b[2J\\u202eevil" in out
    assert main(["ask", photo, "what?", "--model", "tiny-random", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["answer"] == raw, "JSON keeps the text exact, escaped"
    assert printable("tab\there") == "tab\\there"


def test_special_tokens_typed_in_a_question_stay_text(cat):
    model = qformer.create_model("tiny-random")
    eos = model.lm.tokenizer.eos_token_id
    (ids,) = model.processor.prompt_ids(model.processor.question_prompts(["stop </s> here"]))
    assert eos not in ids, "a typed </s> must not become the end-of-text token"
    (answer,) = model.ask([cat], "stop </s> here", max_new_tokens=3)
    assert isinstance(answer, str)
    default = qformer.create_model("bridge")  # SmolLM2's chat tokens
    end = default.lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    (ids,) = default.processor.prompt_ids(default.processor.question_prompts(["hi <|im_end|> there"]))
    assert end not in ids


def test_a_20000_by_10_png_neither_hangs_nor_exhausts_memory(tmp_path):
    wide = tmp_path / "wide.png"
    Image.new("RGB", (20000, 10), (90, 120, 60)).save(wide, optimize=True)
    assert wide.stat().st_size < 2000
    # VmHWM is this process image's own peak; ru_maxrss would carry over the forking parent's (pytest's)
    script = ("import re, sys; from pathlib import Path; from qformer.cli import main; code = main(sys.argv[1:]); "
              "print('peak', re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text())[1]); sys.exit(code)")
    for args in (["wildlife", str(wide)], ["caption", str(wide), "--model", "tiny-random"]):
        run = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        peak_kb = int(run.stdout.rsplit("peak", 1)[1])
        assert peak_kb < 3 * 1024 * 1024, f"{args[0]} peaked at {peak_kb / 1024:.0f} MB"


def test_generation_lengths_are_bounded_in_the_library_too(cat):
    model = qformer.create_model("tiny-random")
    for settings in ({"max_new_tokens": 10**9}, {"num_beams": 10**5}, {"max_new_tokens": 0}, {"max_new_tokens": 2.5}):
        with pytest.raises(ValueError, match="must be a whole number from 1 to"):
            model.caption([cat], **settings)
    with pytest.raises(ValueError, match="must be a whole number from 1 to"):
        model.lm.generate_text(["hello"], max_new_tokens=10**9)


def test_every_network_input_is_bounded(cat):
    from qformer.vision.classifiers import LITE0, ImageNetClassifier

    model = qformer.create_model("bridge")
    classifier = ImageNetClassifier(*LITE0)
    for size in ((20000, 10), (10, 20000), (9000, 3)):
        strip = cat.resize(size)
        assert model.vision.preprocess([strip]).shape[-2:] == (224, 224)
        assert classifier.preprocess([strip]).shape[-2:] == (224, 224)


def results_of(tmp_path: Path, cat, count: int) -> tuple[Path, Path]:
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(count):
        cat.resize((80 + 4 * k, 60 + 3 * k)).save(folder / f"cat{k}.jpg")
    out = tmp_path / "results.json"
    done = qformer_cli("wildlife", str(folder), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    return folder, out


def test_finished_results_are_never_replaced_without_asking(tmp_path, cat):
    folder, out = results_of(tmp_path, cat, 3)
    before = out.read_bytes()
    one = tmp_path / "one.jpg"
    cat.resize((70, 50)).save(one)
    refused = qformer_cli("wildlife", str(one), "--out", str(out))
    assert refused.returncode == 2 and "--resume" in refused.stderr and "--overwrite" in refused.stderr
    assert out.read_bytes() == before
    added = qformer_cli("wildlife", str(one), "--out", str(out), "--resume")
    assert added.returncode == 0, added.stderr[-2000:]
    files = [i["file"] for i in json.loads(out.read_text())["images"]]
    assert files == [str(folder / f"cat{k}.jpg") for k in range(3)] + [str(one)], "nothing lost, nothing twice"
    replaced = qformer_cli("wildlife", str(one), "--out", str(out), "--overwrite")
    assert replaced.returncode == 0 and len(json.loads(out.read_text())["images"]) == 1


@pytest.mark.parametrize("damage", [b"", b"{\"done\": {\"a.jpg\": {\"file\": 1}}}", b"\xff\xfe not json"])
def test_a_damaged_checkpoint_is_named_and_kept(tmp_path, cat, damage):
    photos = tmp_path / "photos"
    photos.mkdir()
    cat.save(photos / "cat.jpg")
    out = tmp_path / "results.json"
    partial = tmp_path / "results.json.rank0.partial.json"
    partial.write_bytes(damage)
    run = qformer_cli("wildlife", str(photos), "--out", str(out), "--resume")
    assert run.returncode == 1 and str(partial) in run.stderr and "kept as it is" in run.stderr
    assert "Traceback" not in run.stderr and partial.read_bytes() == damage and not out.exists()


def test_damaged_results_are_named_kept_and_not_recomputed(tmp_path, cat):
    photos = tmp_path / "photos"
    photos.mkdir()
    cat.save(photos / "cat.jpg")
    out = tmp_path / "results.json"
    out.write_text('{"images": [ truncated')
    run = qformer_cli("wildlife", str(photos), "--out", str(out), "--resume")
    assert run.returncode == 1 and str(out) in run.stderr and "damaged" in run.stderr
    assert out.read_text() == '{"images": [ truncated'
    plain = qformer_cli("wildlife", str(photos), "--out", str(out))
    assert plain.returncode == 2 and out.read_text() == '{"images": [ truncated'


def test_out_is_checked_before_any_work(tmp_path, photo):
    assert main(["wildlife", photo, "--out", str(tmp_path)]) == 2
    assert main(["wildlife", photo, "--out", str(tmp_path / "r.json"), "--resume", "--overwrite"]) == 2
    assert not (tmp_path / "r.json").exists()


def test_no_images_is_said_and_fails(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["wildlife", str(tmp_path / "empty")]) == 1
    assert "no images found" in capsys.readouterr().err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hi")
    (tmp_path / "notes" / "IMG_0001.CR2").write_bytes(b"raw sensor data")
    assert main(["wildlife", str(tmp_path / "notes")]) == 1
    err = capsys.readouterr().err
    assert "no images found" in err and "skipped 1 photo(s)" in err and "IMG_0001.CR2" in err
    assert "readme.txt" not in err, "a text file beside the photos is not a photo that was skipped"


def test_unusual_photo_extensions_are_read_or_listed(tmp_path, cat, capsys):
    cat.save(tmp_path / "phone.jfif", format="JPEG")
    (tmp_path / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    assert main(["wildlife", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "phone.jfif" in captured.out and "domestic cat" in captured.out
    assert "phone.heic" in captured.err, "a photo format no installed decoder reads is listed, not dropped silently"


def test_a_file_named_twice_is_done_once(tmp_path, cat):
    photos = tmp_path / "small"
    photos.mkdir()
    for k in range(2):
        cat.resize((80 + k, 60)).save(photos / f"img00{k}.jpg")
    out = tmp_path / "results.json"
    run = qformer_cli("wildlife", str(photos), str(photos / "img000.jpg"), str(photos) + "/", "--out", str(out))
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(json.loads(out.read_text())["images"]) == 2


def test_resume_checks_earlier_results_before_any_work(tmp_path, photo):
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"images": [{"file": "a.jpg", "detections": [{"category": "1", "conf": "high",
                                                                          "bbox": "left"}]}]}))
    run = qformer_cli("wildlife", photo, "--out", str(out), "--resume", timeout=60)
    assert run.returncode == 1 and str(out) in run.stderr and "kept as it is" in run.stderr
    assert "Traceback" not in run.stderr and "wildlife:" not in run.stderr  # no progress bar: no work began


def test_an_out_that_cannot_be_written_is_found_before_any_work(photo, capsys):
    assert main(["wildlife", photo, "--out", "/proc/results.json"]) == 2
    assert "cannot write there" in capsys.readouterr().err
