"""A procedurally drawn corpus of small scenes with compositional captions and question-answer pairs.

`python -m qformer.training.scenes OUT --count 2000` writes `OUT/train/` and `OUT/eval/` image folders with
`metadata.jsonl` (text, question, answer) and `OUT/manifest.json` (what made each item, its license).
The eval split holds colour-shape combinations that never appear in training, so it measures
composition rather than memory. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from .shapes import COLOURS

SHAPES = ("circle", "square", "triangle", "star")
NUMBERS = {1: "one", 2: "two", 3: "three"}
# never drawn in training: the eval split is made of scenes that contain one of these
HELD_OUT = {("green", "triangle"), ("yellow", "circle"), ("blue", "star")}
LICENSE = "CC0-1.0: drawn by train/scenes.py, no third-party material"


@dataclass(frozen=True)
class Item:
    shape: str
    colour: str
    column: int  # 0 left, 1 middle, 2 right


def where(column: int) -> str:
    return ("on the left", "in the middle", "on the right")[column]


def plural(word: str, count: int) -> str:
    return word if count == 1 else word + "s"


def draw_scene(items: list[Item], size: int, rng: random.Random) -> Image.Image:
    background = tuple(rng.randint(225, 250) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    pen = ImageDraw.Draw(image)
    cell = size // 3
    for item in items:
        radius = rng.randint(cell // 4, cell // 2 - 2)
        cx = item.column * cell + cell // 2
        cy = rng.randint(radius + 2, size - radius - 2)
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        fill = tuple(min(255, max(0, c + rng.randint(-20, 20))) for c in COLOURS[item.colour])
        if item.shape == "circle":
            pen.ellipse(box, fill=fill)
        elif item.shape == "square":
            pen.rectangle(box, fill=fill)
        elif item.shape == "triangle":
            pen.polygon([(cx, cy - radius), (cx + radius, cy + radius), (cx - radius, cy + radius)], fill=fill)
        else:
            points = []
            for k in range(10):  # a five-pointed star: outer and inner corners in turn
                r = radius if k % 2 == 0 else radius // 2
                angle = k * math.pi / 5 - math.pi / 2
                points.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
            pen.polygon(points, fill=fill)
    return image


def describe(items: list[Item]) -> str:
    """'two red circles and a blue square': groups of equal colour and shape, in a fixed order."""
    groups: dict[tuple[str, str], int] = {}
    for item in items:
        groups[(item.colour, item.shape)] = groups.get((item.colour, item.shape), 0) + 1
    parts = [f"{'a' if n == 1 else NUMBERS[n]} {colour} {plural(shape, n)}" for (colour, shape), n in groups.items()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def question(items: list[Item], rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(("count", "colour", "where"))
    target = rng.choice(items)
    if kind == "count":
        n = sum(i.shape == target.shape for i in items)
        return f"how many {plural(target.shape, 2)} are there?", str(n)
    if kind == "colour":
        return f"what colour is the {target.shape} {where(target.column)}?", target.colour
    return f"where is the {target.colour} {target.shape}?", ("left", "middle", "right")[target.column]


def make_scene(rng: random.Random, held_out: bool) -> list[Item]:
    while True:
        columns = rng.sample(range(3), rng.randint(1, 3))
        items = [Item(rng.choice(SHAPES), rng.choice(list(COLOURS)), c) for c in sorted(columns)]
        has_held_out = any((i.colour, i.shape) in HELD_OUT for i in items)
        if has_held_out == held_out:
            return items


def write_corpus(out: str | Path, count: int = 2000, eval_fraction: float = 0.1, size: int = 128,
                 seed: int = 0) -> Path:
    out = Path(out)
    rng = random.Random(seed)
    manifest = {"generator": "train/scenes.py", "seed": seed, "license": LICENSE,
                "held_out_combinations": sorted(" ".join(c) for c in HELD_OUT), "splits": {}}
    for split, n in (("train", count - int(count * eval_fraction)), ("eval", int(count * eval_fraction))):
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(n):
            items = make_scene(rng, held_out=split == "eval")
            name = f"{i:05d}.png"
            draw_scene(items, size, rng).save(folder / name)
            q, a = question(items, rng)
            rows.append({"file_name": name, "text": describe(items), "question": q, "answer": a,
                         "source": "procedural", "license": "CC0-1.0"})
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        manifest["splits"][split] = n
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_corpus(args.out, args.count, size=args.size, seed=args.seed))
