"""The default bridge's training corpus, built from what the package registries serve.

`python -m qformer.training.corpus runs/corpus` writes:
- `scenes/`: procedural scenes (train/scenes.py), compositional captions and questions, CC0;
- `emoji/`: emoji artwork with Unicode names (train/emoji.py). Training uses Google's Noto style;
  evaluation uses Twitter's Twemoji, an artwork style never seen in training;
- `train.jsonl`, `eval.jsonl` (both held-out parts, interleaved), `eval-scenes.jsonl`, `eval-emoji.jsonl`:
  one record per image with `image`, `text`, `question`, `answer`, `source`, `license`;
- `manifest.json`: where every part came from (package, version, integrity hash) and its license.

Deterministic for a given seed and package version.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from . import emoji, scenes

ANIMAL_VARIANTS = 4  # animal emoji are drawn more often: the wildlife side of the package cares most about them


def _scene_rows(root: Path, split: str) -> list[dict]:
    rows = [json.loads(line) for line in (root / "scenes" / split / "metadata.jsonl").read_text().splitlines()]
    return [{"image": f"scenes/{split}/{row.pop('file_name')}", **row} for row in rows]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def build(out: str | Path, scene_count: int = 6000, size: int = 128, seed: int = 0,
          npm_cache: str | Path | None = None) -> Path:
    out = Path(out)
    rng = random.Random(seed)
    npm_cache = Path(npm_cache) if npm_cache else out / "npm"
    scenes.write_corpus(out / "scenes", count=scene_count, size=size, seed=seed)
    scene_train, scene_eval = _scene_rows(out, "train"), _scene_rows(out, "eval")

    sources = {}
    emoji_rows = {}
    for split, style in (("train", "google"), ("eval", "twitter")):
        tarball, provenance = emoji.fetch(style, npm_cache)
        sources[style] = {**provenance, "artwork_license": emoji.ARTWORK_LICENSE[style],
                          "metadata_license": "MIT (emoji-datasource, Cal Henderson)"}
        items = emoji.read(tarball, style)

        def variants(item: emoji.Emoji, split: str = split) -> int:
            return ANIMAL_VARIANTS if split == "train" and item.category == "Animals & Nature" else 1

        emoji_rows[split] = emoji.write_split(items, out / "emoji" / split, f"emoji/{split}", variants, size, rng,
                                              emoji.ARTWORK_LICENSE[style], f"npm:{provenance['package']}")

    train = scene_train + emoji_rows["train"]
    rng.shuffle(train)
    rng.shuffle(scene_eval)
    rng.shuffle(emoji_rows["eval"])
    mixed = [row for pair in zip(scene_eval, emoji_rows["eval"]) for row in pair]
    _write_jsonl(out / "train.jsonl", train)
    _write_jsonl(out / "eval.jsonl", mixed)
    _write_jsonl(out / "eval-scenes.jsonl", scene_eval)
    _write_jsonl(out / "eval-emoji.jsonl", emoji_rows["eval"])
    manifest = {
        "generator": "python -m qformer.training.corpus", "seed": seed, "image_size": size,
        "parts": {
            "scenes": {**json.loads((out / "scenes" / "manifest.json").read_text()),
                       "held_out": "eval scenes each contain a colour-shape combination never drawn in training"},
            "emoji": {"sources": sources, "held_out": "eval uses the twitter artwork style; training uses google"},
        },
        "counts": {"train": len(train), "eval-scenes": len(scene_eval), "eval-emoji": len(emoji_rows["eval"])},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--scenes", type=int, default=6000, help="procedural scenes (a tenth are held out)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--npm-cache", default=None, help="where the npm tarballs are kept (default OUT/npm)")
    args = parser.parse_args()
    print(build(args.out, args.scenes, args.size, args.seed, args.npm_cache))
