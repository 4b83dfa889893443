"""Training recipes and their overrides from someone else: every field within its range, no YAML
aliases to expand, every failure a sentence with its exit code (2 for a bad recipe, 1 for damaged
files), and a resume that cannot restore its state stops rather than going on differently."""

import json
import time

import pytest

from qformer.cli.main import main
from qformer.config import ConfigError
from qformer.training.recipe import load_recipe

from .test_hostile_training import RECIPE, common, shapes, train_cli  # noqa: F401 -- shapes is a fixture

BILLION_LAUGHS = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"] + [
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]) + "\nmodel: *i\n"


def test_a_recipe_of_nested_aliases_is_refused_before_it_expands(tmp_path, capsys):
    recipe = tmp_path / "laughs.yaml"
    recipe.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 1000
    start = time.perf_counter()
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "an alias (*a)" in err and "Traceback" not in err and time.perf_counter() - start < 5
    big = tmp_path / "big.yaml"
    big.write_text("model: tiny-random\n" + "# padding\n" * 200_000)
    with pytest.raises(ConfigError, match="a recipe is a page of settings"):
        load_recipe(big)


@pytest.mark.parametrize("override, said", [
    ("log_every=0", "log_every must be from 1"),
    ("optim.grad_accumulation=0", "optim.grad_accumulation must be from 1"),
    ("data.batch_size=100000", "data.batch_size must be from 1 to 1024"),
    ("max_steps=-5", "max_steps must be from 1"),
    ("optim.lr=-1", "optim.lr must be from"),
    ("optim.betas=[0.9, 2]", "optim.betas must be from 0 to"),
    ("seed=-1", "seed must be from 0"),
    ("keep_last=-3", "keep_last must be from 0"),
])
def test_every_number_has_its_range(override, said):
    with pytest.raises(ConfigError, match=said):
        load_recipe(RECIPE, ["data.train=x", override])


def test_bad_recipes_and_models_are_usage_errors_with_a_sentence(tmp_path, capsys):
    for args, said in [(["model=no-such-model", "data.train=x"], "unknown model 'no-such-model'"),
                       (["max_steps=-5", "data.train=x"], "max_steps must be from 1"),
                       (["log_every=0", "data.train=x"], "log_every must be from 1")]:
        assert main(["train", RECIPE, f"output_dir={tmp_path / 'run'}", *args]) == 2, args
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err
    assert not (tmp_path / "run" / "final").exists()


def rewrite_manifest(checkpoint, name: str) -> None:
    """Re-hash one file in a checkpoint's manifest, as someone who changed it on purpose would."""
    from qformer.training.checkpoints import MANIFEST, _sha256

    manifest = json.loads((checkpoint / MANIFEST).read_text())
    path = checkpoint / name
    manifest["files"][name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))


def test_a_tampered_optimizer_state_stops_the_resume_with_a_sentence(tmp_path, shapes):  # noqa: F811
    out = tmp_path / "run"
    assert train_cli(*common(shapes, out, "max_steps=2")).returncode == 0
    checkpoint = out / "checkpoints" / "step-00000002"
    marker = tmp_path / "MARKER"
    (checkpoint / "optimizer.bin").write_bytes(
        b"\x80\x04\x95" + b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")  # a pickle that runs code
    rewrite_manifest(checkpoint, "optimizer.bin")
    resumed = train_cli(*common(shapes, out, "max_steps=4"), "--resume")
    assert resumed.returncode == 1 and "optimizer or scheduler state cannot be read" in resumed.stderr
    assert "Traceback" not in resumed.stderr and not marker.exists(), "no code from the pickle ran"


def test_a_resume_that_cannot_restore_its_random_state_stops(tmp_path, shapes):  # noqa: F811
    out = tmp_path / "run"
    assert train_cli(*common(shapes, out, "max_steps=2")).returncode == 0
    checkpoint = out / "checkpoints" / "step-00000002"
    (checkpoint / "rng_state_0.json").write_text(json.dumps({"python": [3, [1, 2], None]}))
    rewrite_manifest(checkpoint, "rng_state_0.json")
    resumed = train_cli(*common(shapes, out, "max_steps=4"), "--resume")
    assert resumed.returncode == 1 and "random generators' state cannot be restored" in resumed.stderr
    assert "Traceback" not in resumed.stderr and not (out / "checkpoints" / "step-00000004").exists()
