import argparse
import json
import subprocess
import sys

import pytest
from PIL import Image

from qformer.cli.main import main


@pytest.fixture
def cat_file(tmp_path, cat):
    path = tmp_path / "cat.jpg"
    cat.save(path)
    return str(path)


def test_caption_json(cat_file, tmp_path, capsys):
    other = tmp_path / "other.png"
    other.write_bytes(b"not a png")
    code = main(["caption", cat_file, str(other), "--model", "tiny-random", "--json", "--max-new-tokens", "3"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1, "a bad input gives exit code 1"
    assert out[0]["image"] == cat_file and isinstance(out[0]["caption"], str)
    assert out[1]["image"] == str(other) and "not an image file" in out[1]["error"]


def test_ask_text(cat_file, capsys):
    assert main(["ask", cat_file, "what is it?", "--model", "tiny-random-t5", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith(cat_file + ": ")


def test_usage_errors_exit_2(cat_file, capsys):
    assert main(["ask", cat_file, "   ", "--model", "tiny-random"]) == 2
    assert "the question is empty" in capsys.readouterr().err
    assert main(["caption", cat_file, "--model", "no-such-model"]) == 2
    assert "cannot load model 'no-such-model'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["caption"])
    assert exit_info.value.code == 2


def test_an_unknown_model_is_refused_before_torch_loads(cat_file):
    code = ("import sys\nfrom qformer.cli import main\n"
            f"code = main(['caption', {cat_file!r}, '--model', 'defualt'])\n"
            "assert 'torch' not in sys.modules, 'torch loaded before the name was checked'\nsys.exit(code)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "unknown model 'defualt'" in run.stderr and "default, grounded, bridge" in run.stderr


def test_console_entry_point(cat_file):
    result = subprocess.run([sys.executable, "-m", "qformer", "models"], capture_output=True, text=True, check=True)
    assert "tiny-random" in result.stdout.split()


def test_version_names_the_package_and_its_distribution(capsys):
    import qformer

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"qformer {qformer.__version__} (qformer-bridge on PyPI)"


def test_mistakes_in_the_inputs_are_told_before_any_model_loads(monkeypatch, capsys, tmp_path):
    import qformer.grounded.loading

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(qformer.grounded.loading, "load_captioner", no_model)
    assert main(["caption", str(tmp_path / "typo.jpg")]) == 1
    assert "typo.jpg: no such file or folder" in capsys.readouterr().err
    assert main(["ask", "https://example.org/cat.jpg", "what is it?"]) == 2
    assert "download it and pass its path" in capsys.readouterr().err
    assert main(["caption", str(tmp_path)]) == 1  # a folder without images
    assert "no images found" in capsys.readouterr().err
    assert main(["ask", "samples/chelsea.jpg", "   "]) == 2
    assert "question" in capsys.readouterr().err


def test_folders_and_several_images_are_taken_wherever_images_are(tmp_path, capsys):
    for name in ("b.png", "a.png"):
        Image.new("RGB", (32, 32), "red").save(tmp_path / name)
    assert main(["caption", str(tmp_path), "--model", "tiny-random", "--max-new-tokens", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert main(["ask", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "what is it?", "--model", "tiny-random",
                 "--max-new-tokens", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_the_command_line_reference_names_every_flag_of_every_command():
    from pathlib import Path

    from qformer.cli.args import build_parser

    reference = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {flag}" for name, parser in commands.choices.items() for action in parser._actions
               for flag in action.option_strings if flag.startswith("--") and flag != "--help"
               and flag not in reference]
    assert missing == [], f"docs/cli.md does not mention {missing}"
