"""A small generated image-caption set: coloured shapes on plain backgrounds, with captions and
question-answer pairs. `python -m qformer.training.shapes OUT_DIR --count 64` writes an image folder with
metadata.jsonl that the training recipes read. Deterministic for a given seed."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40)}
SHAPES = ("circle", "square", "triangle")


def draw(shape: str, colour: str, size: int, rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (size, size), (245, 245, 240))
    pen = ImageDraw.Draw(image)
    margin = rng.randint(size // 8, size // 4)
    box = (margin, margin, size - margin, size - margin)
    fill = COLOURS[colour]
    if shape == "circle":
        pen.ellipse(box, fill=fill)
    elif shape == "square":
        pen.rectangle(box, fill=fill)
    else:
        pen.polygon([(size // 2, margin), (size - margin, size - margin), (margin, size - margin)], fill=fill)
    return image


def write_shapes(out: str | Path, count: int = 64, size: int = 64, seed: int = 0, vqa: bool = False) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        shape, colour = SHAPES[i % len(SHAPES)], list(COLOURS)[(i // len(SHAPES)) % len(COLOURS)]
        name = f"{i:04d}.png"
        draw(shape, colour, size, rng).save(out / name)
        row = {"file_name": name, "text": f"a {colour} {shape}"}
        if vqa:
            row |= {"question": "what colour is the shape?", "answer": colour}
        rows.append(row)
    (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vqa", action="store_true", help="add question/answer columns")
    args = parser.parse_args()
    print(write_shapes(args.out, args.count, args.size, args.seed, args.vqa))
