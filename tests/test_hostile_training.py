"""Training with broken data and damaged or foreign checkpoints: it stops with a sentence, resumes only
its own run, and falls back to the last complete checkpoint, keeping the damaged one as it was."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qformer.training.shapes import write_shapes

ROOT = Path(__file__).resolve().parent.parent
RECIPE = str(ROOT / "configs" / "train" / "tiny-stage1.yaml")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes(tmp_path_factory.mktemp("shapes"), count=16, size=40)


def train_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qformer", "train", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TQDM_DISABLE": "1"})


def common(shapes, out: Path, *extra: str) -> list[str]:
    return [RECIPE, f"data.train={shapes}", f"output_dir={out}", "data.batch_size=4", "data.eval_size=4",
            "log_every=1", "optim.warmup_steps=1", "save_every=2", "keep_last=3", *extra]


def digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()


def test_unreadable_images_end_the_run_with_a_message(tmp_path):
    (tmp_path / "broken.jsonl").write_text(
        "".join(json.dumps({"image": f"img{k}.png", "text": "x"}) + "\n" for k in range(6)))
    for k in range(6):
        (tmp_path / f"img{k}.png").write_bytes(b"\x89PNG truncated")
    run = train_cli(RECIPE, f"data.train={tmp_path / 'broken.jsonl'}", f"output_dir={tmp_path / 'run'}",
                    "data.batch_size=2", "max_steps=3")
    assert run.returncode == 1, run.stderr[-2000:]
    assert "broken.jsonl" in run.stderr and "images in a row could not be read" in run.stderr and "img" in run.stderr
    (tmp_path / "half.jsonl").write_text("".join(json.dumps({"image": f"img{k}.png", "text": "x"}) + "\n"
                                                 for k in range(6)) * 30)
    limited = train_cli(RECIPE, f"data.train={tmp_path / 'half.jsonl'}", f"output_dir={tmp_path / 'run2'}",
                        "data.batch_size=2", "max_steps=3", "data.max_unreadable_in_a_row=10")
    assert limited.returncode == 1 and "10 images in a row could not be read" in limited.stderr


def test_resume_refuses_another_recipes_checkpoints_and_loses_nothing(tmp_path, shapes):
    out = tmp_path / "run"
    first = train_cli(*common(shapes, out, "max_steps=4"))
    assert first.returncode == 0, first.stderr[-2000:]
    before = digest(out / "checkpoints"), digest(out / "final")
    other = train_cli(*common(shapes, out, "max_steps=4", "optim.lr=1e-4"), "--resume")
    assert other.returncode == 2 and "another recipe" in other.stderr and "--resume-other-recipe" in other.stderr
    fresh = train_cli(*common(shapes, out, "max_steps=4", "optim.lr=1e-4"))
    assert fresh.returncode == 2 and "holds an earlier run" in fresh.stderr and "--overwrite" in fresh.stderr
    assert (digest(out / "checkpoints"), digest(out / "final")) == before, "nothing of the earlier run changed"
    longer = train_cli(*common(shapes, out, "max_steps=6"), "--resume")
    assert longer.returncode == 0 and "resumed from" in longer.stdout + longer.stderr, "train longer: same recipe"
    on_purpose = train_cli(*common(shapes, out, "max_steps=8", "optim.lr=1e-4"), "--resume", "--resume-other-recipe")
    assert on_purpose.returncode == 0, on_purpose.stderr[-2000:]
    replaced = train_cli(*common(shapes, out, "max_steps=2", "optim.lr=1e-4"), "--overwrite")
    assert replaced.returncode == 0 and [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000002"]


@pytest.mark.parametrize("damage, said", [
    (lambda c: (c / "rng_state_0.json").unlink(), "rng_state_0.json is missing"),
    (lambda c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:100]),
     "model.safetensors was changed or truncated"),
    (lambda c: (c / "trainer_state.json").write_text(""), "trainer_state.json was changed or truncated"),
    (lambda c: (c / "manifest.json").unlink(), "it has no manifest.json"),
])
def test_a_damaged_checkpoint_falls_back_to_the_previous_complete_one(tmp_path, shapes, damage, said):
    out = tmp_path / "run"
    assert train_cli(*common(shapes, out, "max_steps=4")).returncode == 0
    newest = out / "checkpoints" / "step-00000004"
    damage(newest)
    kept = digest(newest)
    resumed = train_cli(*common(shapes, out, "max_steps=6"), "--resume")
    said_all = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"checkpoint {newest} cannot be used: {said}" in said_all
    assert "resumed from" in said_all and "step-00000002" in said_all
    (aside,) = (out / "checkpoints").glob("step-00000004.damaged-*")  # the run saved a new step 4 beside it
    assert digest(aside) == kept, "a damaged checkpoint is kept as it was, not deleted or replaced"


def test_no_complete_checkpoint_is_an_unreadable_input(tmp_path, shapes):
    out = tmp_path / "run"
    assert train_cli(*common(shapes, out, "max_steps=2")).returncode == 0
    (out / "checkpoints" / "step-00000002" / "rng_state_0.json").unlink()
    resumed = train_cli(*common(shapes, out, "max_steps=4"), "--resume")
    assert resumed.returncode == 1 and "none of the 1 checkpoint(s)" in resumed.stderr
    assert "Traceback" not in resumed.stderr and (out / "checkpoints" / "step-00000002").exists()
