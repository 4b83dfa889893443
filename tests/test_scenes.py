"""The procedural corpus: reproducible, compositional, with held-out combinations only in eval."""

import json

from qformer.training.data import load_source
from qformer.training.scenes import HELD_OUT, Item, describe, write_corpus


def test_captions_group_and_count():
    items = [Item("circle", "red", 0), Item("circle", "red", 1), Item("square", "blue", 2)]
    assert describe(items) == "two red circles and a blue square"
    assert describe([Item("star", "green", 1)]) == "a green star"


def test_corpus_is_reproducible_and_holds_out_combinations(tmp_path):
    a = write_corpus(tmp_path / "a", count=40, size=48, seed=3)
    b = write_corpus(tmp_path / "b", count=40, size=48, seed=3)
    assert (a / "train" / "metadata.jsonl").read_text() == (b / "train" / "metadata.jsonl").read_text()
    assert (a / "train" / "00007.png").read_bytes() == (b / "train" / "00007.png").read_bytes()
    held = [" ".join(c) for c in HELD_OUT]
    train_rows = [json.loads(line) for line in (a / "train" / "metadata.jsonl").read_text().splitlines()]
    eval_rows = [json.loads(line) for line in (a / "eval" / "metadata.jsonl").read_text().splitlines()]
    assert len(train_rows) == 36 and len(eval_rows) == 4
    assert not any(h in r["text"] or h + "s" in r["text"] for r in train_rows for h in held)
    assert all(any(h in r["text"] or h + "s" in r["text"] for h in held) for r in eval_rows)
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["license"].startswith("CC0") and manifest["splits"] == {"train": 36, "eval": 4}
    dataset = load_source(str(a / "train"))  # the training code reads it as it is
    assert {"text", "question", "answer"} <= set(dataset.column_names)
