"""End-to-end training on CPU: stage 1 then 2, exact resume after SIGKILL, bad data, bad steps."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import qformer
from qformer.config import ConfigError
from qformer.training.loop import BadStepsError, train
from qformer.training.recipe import load_recipe
from qformer.training.shapes import write_shapes

ROOT = Path(__file__).resolve().parent.parent
FAST = ["model_overrides={qformer: {dropout: 0.1}}", "log_every=2", "optim.warmup_steps=2"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes(tmp_path_factory.mktemp("shapes"), count=24, size=48)


def recipe(tmp_path, shapes, stage=1, **values):
    overrides = [f"data.train={shapes}", f"output_dir={tmp_path / f'stage{stage}'}", "data.batch_size=4",
                 "data.eval_size=8", *FAST] + [f"{k}={v}" for k, v in values.items()]
    return load_recipe(ROOT / "configs" / "train" / f"tiny-stage{stage}.yaml", overrides)


def losses(run: Path) -> list[float]:
    state = sorted((run / "checkpoints").glob("step-*"))[-1] / "trainer_state.json"
    return [h["loss"] for h in json.loads(state.read_text())["history"]]


def test_stage1_then_stage2_then_caption(tmp_path, shapes, cat):
    first = recipe(tmp_path, shapes, stage=1, max_steps=30, save_every=10)
    train(first)
    run1 = Path(first.output_dir)
    assert losses(run1)[-1] < losses(run1)[0]
    assert (run1 / "loss_curve.png").stat().st_size > 0 and (run1 / "tensorboard").is_dir()
    assert json.loads((run1 / "recipe.resolved.json").read_text())["max_steps"] == 30
    assert len(list((run1 / "checkpoints").glob("step-*"))) == 2, "keep_last=2"
    evaluation = json.loads(sorted((run1 / "eval").glob("*.json"))[-1].read_text())
    assert {"itc_i2t_r@1", "itm_t2i_r@5", "bleu4", "cider"} <= set(evaluation)

    second = recipe(tmp_path, shapes, stage=2, max_steps=20, save_every=0, model=str(run1 / "final"))
    train(second)
    run2 = Path(second.output_dir)
    assert losses(run2)[-1] < losses(run2)[0]
    model = qformer.Blip2.from_pretrained(run2 / "final")
    stage1 = load_file(run1 / "final" / "model.safetensors")
    stage2 = load_file(run2 / "final" / "model.safetensors")
    assert torch.equal(stage1["heads.itm_head.weight"], stage2["heads.itm_head.weight"]), "stage 2 leaves ITM alone"
    assert not torch.equal(stage1["projection.weight"], stage2["projection.weight"])
    assert all(isinstance(c, str) for c in model.caption([cat], max_new_tokens=5))


def run_cli(args, env=None):
    return subprocess.run([sys.executable, "-m", "qformer.training", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_resume_after_sigkill_reaches_the_same_weights(tmp_path, shapes):
    common = [str(ROOT / "configs/train/tiny-stage1.yaml"), f"data.train={shapes}", "data.batch_size=4",
              "max_steps=9", "save_every=3", "eval_every=0", "data.eval_size=4", *FAST]
    straight = run_cli([*common, f"output_dir={tmp_path / 'straight'}"])
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = subprocess.run([sys.executable, str(ROOT / "tests" / "interrupt.py"), "train", "5", *common,
                             f"output_dir={tmp_path / 'killed'}"], cwd=ROOT, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == ["step-00000003"]
    resumed = run_cli([*common, f"output_dir={tmp_path / 'killed'}", "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    a = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_corrupt_images_are_skipped_and_reported(tmp_path, shapes):
    data = tmp_path / "data"
    write_shapes(data, count=12, size=48)
    (data / "0003.png").write_bytes(b"\x89PNG broken")
    (data / "0007.png").write_bytes((data / "0007.png").read_bytes()[:60])
    config = recipe(tmp_path, data, max_steps=6, save_every=0)
    train(config)
    summary = json.loads((Path(config.output_dir) / "summary.json").read_text())
    assert summary["skipped_images"] >= 2
    assert any("0003.png" in e for e in summary["skipped_examples"])


def test_non_finite_losses_stop_the_run(tmp_path, shapes, monkeypatch):
    def nan_losses(self, image_tokens, ids, mask, image_ids=None):
        nan = self.qformer.query_tokens.sum() * float("nan")
        return {"loss": nan, "itc": nan, "itm": nan, "itg": nan}

    monkeypatch.setattr(qformer.Blip2, "stage1_losses", nan_losses)
    with pytest.raises(BadStepsError, match="3 non-finite losses in a row at step 0"):
        train(recipe(tmp_path, shapes, max_steps=5, max_bad_steps=3))


def test_jsonl_and_parquet_sources(tmp_path, shapes):
    import datasets

    rows = [json.loads(line) for line in (shapes / "metadata.jsonl").read_text().splitlines()]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps({"image": str(shapes / r["file_name"]), "caption": r["text"]}) + "\n"
                             for r in rows))
    train(recipe(tmp_path, jsonl, max_steps=2, save_every=0, output_dir=tmp_path / "j"))
    parquet = tmp_path / "pairs.parquet"
    table = datasets.Dataset.from_list([{"image": str(shapes / r["file_name"]), "text": r["text"]} for r in rows])
    table.cast_column("image", datasets.Image()).to_parquet(parquet)
    train(recipe(tmp_path, parquet, max_steps=2, save_every=0, output_dir=tmp_path / "p"))
    assert (tmp_path / "p" / "final" / "model.safetensors").exists()


def test_vqa_stage2_and_recipe_errors(tmp_path):
    data = write_shapes(tmp_path / "vqa", count=12, size=48, vqa=True)
    config = recipe(tmp_path, data, stage=2, max_steps=3, save_every=0, model="tiny-random")
    train(config)
    evaluation = json.loads(sorted((Path(config.output_dir) / "eval").glob("*.json"))[-1].read_text())
    assert 0.0 <= evaluation["vqa_accuracy"] <= 1.0
    with pytest.raises(ConfigError, match=r"optim: unknown key\(s\) \['learning_rate'\]"):
        recipe(tmp_path, data, **{"optim.learning_rate": 1})
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_recipe(ROOT / "configs/train/tiny-stage1.yaml", ["max_steps"])


def test_feature_cache_gives_the_same_run_faster(tmp_path, shapes):
    plain = recipe(tmp_path, shapes, max_steps=12, save_every=0, output_dir=tmp_path / "plain")
    cached = recipe(tmp_path, shapes, max_steps=12, save_every=0, output_dir=tmp_path / "cached",
                    feature_cache=tmp_path / "features")
    train(plain)
    train(cached)
    a = load_file(tmp_path / "plain" / "final" / "model.safetensors")
    b = load_file(tmp_path / "cached" / "final" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    summary = json.loads((tmp_path / "cached" / "summary.json").read_text())["feature_cache"]
    assert summary["misses"] == 24 and summary["hits"] == 12 * 4 - 24  # 24 images, 48 looked up
    # another preprocessing is another cache: no stale tokens
    other = recipe(tmp_path, shapes, max_steps=1, save_every=0, output_dir=tmp_path / "other",
                   feature_cache=tmp_path / "features", model_overrides="{vision: {image_size: 48}}")
    train(other)
    assert len([p for p in (tmp_path / "features").iterdir() if p.is_dir()]) == 2


def test_two_processes_with_torchrun(tmp_path, shapes):
    """DDP over gloo on CPU: ITC gathers across ranks, every rank checkpoints its RNG, resume works."""
    args = ["--nproc_per_node", "2", "-m", "qformer.training", str(ROOT / "configs/train/tiny-stage1.yaml"),
            f"data.train={shapes}", "data.batch_size=4", "data.eval_size=4", "save_every=2",
            f"output_dir={tmp_path / 'ddp'}", *FAST]
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    first = subprocess.run([*torchrun, *args, "max_steps=2"], cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = tmp_path / "ddp" / "checkpoints" / "step-00000002"
    assert {"random_states_0.pkl", "random_states_1.pkl", "model.safetensors"} <= {p.name for p in checkpoint.iterdir()}
    resumed = subprocess.run([*torchrun, *args, "max_steps=4", "--resume"], cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((tmp_path / "ddp" / "summary.json").read_text())["steps"] == 4


def test_streaming_source_trains_and_resumes(tmp_path, shapes):
    first = recipe(tmp_path, shapes, max_steps=4, save_every=2, output_dir=tmp_path / "s", **{"data.streaming": True})
    train(first)
    state = json.loads((tmp_path / "s" / "checkpoints" / "step-00000004" / "trainer_state.json").read_text())
    assert state["data"]["consumed"] > 0
    more = recipe(tmp_path, shapes, max_steps=6, save_every=2, output_dir=tmp_path / "s", **{"data.streaming": True})
    train(more, resume=True)
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["steps"] == 6


def test_stage2_alternates_captions_and_answers_when_data_has_both(tmp_path, shapes):
    from qformer.training.data import Batch
    from qformer.training.loop import _texts

    model = qformer.create_model("tiny-random")
    config = recipe(tmp_path, shapes, stage=2, model="tiny-random")
    batch = Batch(["k"], [None], ["a red circle"], ["what colour?"], ["red"], [True])
    assert _texts(model, batch, config, step=0) == (["a red circle"], ["a photo of"])
    assert _texts(model, batch, config, step=1) == (["red"], ["Question: what colour? Answer:"])
    qa_only = Batch(["k"], [None], ["what colour? red"], ["what colour?"], ["red"], [False])
    assert _texts(model, qa_only, config, step=0) == (["red"], ["Question: what colour? Answer:"])


def test_dataloader_workers_change_nothing_but_speed(tmp_path, shapes):
    """Two DataLoader workers decode and preprocess with the model's processor; the weights come out
    bit-identical to decoding in the main process, unreadable images included."""
    (shapes_with_bad := tmp_path / "data").mkdir()
    rows = [json.loads(line) for line in (shapes / "metadata.jsonl").read_text().splitlines()]
    for r in rows:
        (shapes_with_bad / r["file_name"]).write_bytes((shapes / r["file_name"]).read_bytes())
    (shapes_with_bad / "broken.png").write_bytes(b"\x89PNG broken")
    rows.insert(3, {"file_name": "broken.png", "text": "nothing"})
    (shapes_with_bad / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    finals = []
    for workers in (0, 2):
        run = recipe(tmp_path, shapes_with_bad, max_steps=6, save_every=0, output_dir=tmp_path / f"w{workers}",
                     **{"data.num_workers": workers})
        train(run)
        finals.append(load_file(tmp_path / f"w{workers}" / "final" / "model.safetensors"))
        assert json.loads((tmp_path / f"w{workers}" / "summary.json").read_text())["skipped_images"] >= 1
    assert finals[0].keys() == finals[1].keys()
    for key in finals[0]:
        assert torch.equal(finals[0][key], finals[1][key]), key


def test_the_processor_pickles_into_workers(cat):
    import pickle

    model = qformer.create_model("tiny-random")
    processor = pickle.loads(pickle.dumps(model.processor))
    pixels, _ = processor.images([cat])
    torch.testing.assert_close(pixels, model.processor.images([cat])[0])
    labels = processor.lm_training(["a"], ["cat"])["labels"]
    assert labels.tolist() == model.processor.lm_training(["a"], ["cat"])["labels"].tolist()
