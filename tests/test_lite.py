"""The torch-free runtime of an exported folder (`qformer.deploy.lite`): the torch path's answers token for
token, no torch in the process, the CLI's choice of it, and hostile manifests refused by name."""

import json
import subprocess
import sys

import numpy as np
import pytest

import qformer
from qformer.cli.main import main
from qformer.deploy.export import export_onnx
from qformer.deploy.exported import MANIFEST
from qformer.deploy.lite import LiteCaptioner
from qformer.files import sha256_of

from .conftest import random_photo

SAMPLES = ["samples/scene.png", "samples/fox-emoji.png"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The shipped default with its int4 language model, exported."""
    folder = tmp_path_factory.mktemp("lite") / "default-int4"
    model = qformer.create_model("bridge", lm={"quantize": "int4"})
    cached = model.lm.engine.folder / "embed_tokens.safetensors"
    mode = cached.stat().st_mode & 0o777
    cached.chmod(0o600)  # as an engine cached by an older version left it
    try:
        export_onnx(model, folder)
    finally:
        cached.chmod(mode)
    return folder


def test_every_exported_file_gets_the_same_mode(exported):
    assert len({path.stat().st_mode & 0o777 for path in exported.rglob("*") if path.is_file()}) == 1


def test_answers_are_the_torch_paths_own(exported, photos):
    lite, torch_path = LiteCaptioner(exported), qformer.create_model(str(exported))
    images = [*photos, *SAMPLES]
    assert lite.caption(images) == torch_path.caption(images)
    assert lite.caption(images, max_new_tokens=3) == torch_path.caption(images, max_new_tokens=3)
    # prompts of different lengths (left padding), and control tokens typed into a question stay text
    questions = ["what colour is the square?", "is there a cat?", "hi <|im_end|> there, what is it?", "where?",
                 "how many shapes are in the picture, and which colours are they?"]
    assert lite.ask(images, questions) == torch_path.ask(images, questions)
    assert lite.prompt_ids(questions) == torch_path.processor.prompt_ids(questions)


def test_unreadable_images_are_named_in_place(exported, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    lite = LiteCaptioner(exported)
    answers = lite.caption([SAMPLES[0], str(broken), random_photo(1)], return_exceptions=True)
    assert isinstance(answers[0], str) and isinstance(answers[2], str)
    assert isinstance(answers[1], qformer.ImageLoadError) and "broken.jpg" in str(answers[1])
    with pytest.raises(qformer.ImageLoadError, match="broken.jpg"):
        lite.caption([str(broken)])
    with pytest.raises(ValueError, match="decodes greedily"):
        lite.caption(SAMPLES, num_beams=3)
    with pytest.raises(ValueError, match="question 1 is empty"):
        lite.ask(SAMPLES, ["what?", "  "])


def test_no_torch_is_imported(exported):
    code = ("import sys\nfrom qformer.cli import main\n"
            f"code = main(['caption', {SAMPLES[0]!r}, '--model', {str(exported)!r}])\n"
            "assert 'torch' not in sys.modules, 'the exported folder imported torch'\nsys.exit(code)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"{SAMPLES[0]}: ") and len(run.stdout.split(": ", 1)[1].strip()) > 0


def test_a_folder_exported_from_the_default_routes_photos_as_the_default_does(exported, tmp_path):
    import shutil

    from qformer.grounded import RoutedCaptioner, load_captioner

    folder = tmp_path / "default"
    shutil.copytree(exported, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "captioner": "default"}))  # as `export --model default`
    assert isinstance(load_captioner(str(folder)), RoutedCaptioner)  # the torch path
    assert not isinstance(load_captioner(str(exported)), RoutedCaptioner)  # a bridge's export stays the bridge
    saved = tmp_path / "saved"
    qformer.create_model("tiny-random").save_pretrained(saved)
    assert not isinstance(load_captioner(str(saved)), RoutedCaptioner)  # a saved folder is a bridge
    blocked = ("import sys\n"
               "for m in ('torch', 'torchvision', 'timm', 'transformers', 'accelerate'): sys.modules[m] = None\n")
    code = (blocked + "from qformer.cli import main\n"
            f"sys.exit(main(['caption', 'samples/chelsea.jpg', {SAMPLES[0]!r}, '--model', {str(folder)!r}, '--json']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    photo, drawing = json.loads(run.stdout)
    assert photo["source"] == "grounded" and "cat" in photo["caption"], photo
    assert drawing["source"] == "bridge" and drawing["caption"] == LiteCaptioner(exported).caption([SAMPLES[0]])[0]


def test_the_cli_takes_torch_for_what_the_runtime_does_not_do(exported, tmp_path, capsys):
    assert main(["caption", SAMPLES[0], "--model", str(exported), "--num-beams", "2"]) == 2  # torch, then refused
    assert "decodes greedily" in capsys.readouterr().err
    tiny = tmp_path / "tiny"
    export_onnx(qformer.create_model("tiny-random"), tiny)
    assert "tokenizer.json" in LiteCaptioner.unsupported(tiny)  # a built-in byte tokenizer
    assert main(["caption", SAMPLES[0], "--model", str(tiny), "--max-new-tokens", "3"]) == 0  # in torch


def test_a_hostile_or_old_manifest_is_refused_by_name(exported, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(exported, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    for preprocess, message in [({**manifest["preprocess"], "size": 10**6}, "values no encoder uses"),
                                ({**manifest["preprocess"], "std": [0, 1, 1]}, "values no encoder uses"),
                                ({**manifest["preprocess"], "interpolation": "os.system"}, "values no encoder uses"),
                                ({**manifest["preprocess"], "mean": "abc"}, "not readable")]:
        (folder / MANIFEST).write_text(json.dumps({**manifest, "preprocess": preprocess}))
        with pytest.raises(ValueError, match=message):
            LiteCaptioner(folder)
    (folder / MANIFEST).write_text(json.dumps({k: v for k, v in manifest.items() if k != "preprocess"}))
    assert "export it again" in LiteCaptioner.unsupported(folder)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "lm": {**config["lm"], "onnx": "./../elsewhere"}}))
    assert "SHA-256 does not match" in LiteCaptioner.unsupported(folder)
    rehashed = {**manifest, "files": {**manifest["files"], "config.json": sha256_of(folder / "config.json")}}
    (folder / MANIFEST).write_text(json.dumps(rehashed))  # a forger who rewrites the hash too
    assert "leads out of" in LiteCaptioner.unsupported(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / MANIFEST).write_text("{not json")
    assert "not a readable export manifest" in LiteCaptioner.unsupported(folder)
    assert main(["caption", SAMPLES[0], "--model", str(folder)]) == 1  # the torch path names the file too


def test_an_embedding_table_with_a_lying_header_is_refused(tmp_path):
    from qformer.deploy.engine import mapped_table

    path = tmp_path / "table.safetensors"
    header = json.dumps({"weight": {"dtype": "F32", "shape": [1000, 8], "data_offsets": [0, 32000]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + np.zeros(16, np.float32).tobytes())
    with pytest.raises(ValueError, match=r"must be a \(vocab, 8\) float32 tensor inside the file"):
        mapped_table(path, 8)
    path.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="no readable 'weight' tensor"):
        mapped_table(path, 8)
