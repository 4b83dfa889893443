"""The install without torch that the README gives, made for real: a fresh virtual environment holding
the wheel and the README's packages runs `qformer wildlife` on onnxruntime and captions a photo and a
drawing, and torch cannot be imported there. (It installs from the package index, as the README's own command does.)"""

import json
import re
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_install_lines() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Without torch", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.startswith("pip install")]


def test_the_readmes_torch_free_install_runs_wildlife_without_torch(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("qformer_bridge-*.whl")
    venv.create(tmp_path / "env", with_pip=True)
    python, qformer = tmp_path / "env" / "bin" / "python", tmp_path / "env" / "bin" / "qformer"
    first, second = readme_install_lines()
    assert first.startswith("pip install --no-deps qformer-bridge ")
    for line in (first.replace("qformer-bridge", str(wheel)), second):
        words = [w.strip('"') for w in line.split()]
        install = subprocess.run([str(python), "-m", *words, "-q", "--disable-pip-version-check"],
                                 capture_output=True, text=True, timeout=900)
        assert install.returncode == 0, install.stderr[-3000:]
    out = tmp_path / "results.json"
    run = subprocess.run([str(qformer), "wildlife", str(ROOT / "samples"), "--out", str(out)], capture_output=True,
                         text=True, timeout=600, cwd=tmp_path, env={"PATH": "/usr/bin:/bin",
                                                                     "QFORMER_CACHE": str(tmp_path / "cache")})
    assert run.returncode == 0, run.stderr[-3000:]
    images = {Path(i["file"]).name: i for i in json.loads(out.read_text())["images"]}
    cat = images["chelsea.jpg"]["detections"][0]
    assert cat["qformer"]["scientific_name"] == "Felis catus" and not images["scene.png"]["detections"]
    caption = subprocess.run([str(qformer), "caption", str(ROOT / "samples" / "chelsea.jpg")], capture_output=True,
                             text=True, timeout=600, cwd=tmp_path, env={"PATH": "/usr/bin:/bin",
                                                                         "QFORMER_CACHE": str(tmp_path / "cache")})
    assert caption.returncode == 0 and caption.stdout.strip().endswith("chelsea.jpg: an Egyptian cat"), caption.stderr
    drawing = subprocess.run([str(qformer), "caption", str(ROOT / "samples" / "scene.png")], capture_output=True,
                             text=True, timeout=600, cwd=tmp_path, env={"PATH": "/usr/bin:/bin",
                                                                         "QFORMER_CACHE": str(tmp_path / "cache")})
    assert drawing.returncode == 0, drawing.stderr[-3000:]
    assert drawing.stdout.strip().endswith("scene.png: a blue square and a red circle")
    no_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
