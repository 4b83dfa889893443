"""Score captioners on real photos and on the held-out drawings, each path and the routed default:

    python -m qformer.training.evaluate_captions --photos tests/data/photo_captions.jsonl \
        --photo-root runs/wildlife-photos --drawings runs/corpus/eval-scenes.jsonl runs/corpus/eval-emoji.jsonl

Photos (a JSONL of `image`, `captions` (references), `main` (acceptable names of the main object),
`objects` (every noun a caption may use for what is in the photo), `questions` ([{question,
answers}])): BLEU-4 and CIDEr (pycocoevalcap), main object named, object-noun precision (captions
that name nothing absent from the photo) and recall (captions naming the main object), answers
right (an answer is right when it names an acceptable answer), routing right (photo -> grounded).
Drawings (the corpus's held-out JSONL): BLEU-4, CIDEr, VQA accuracy, routing right (-> bridge).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from functools import cache
from pathlib import Path

from qformer.config import LM_QUANTIZE
from qformer.grounded import load_captioner
from qformer.grounded.language import singular

from .metrics import caption_scores, normalize_answer, vqa_accuracy

PATHS = ("default", "bridge", "grounded")


@cache
def vocabulary() -> tuple[str, ...]:
    """Object nouns a caption may contain: COCO's classes, ImageNet's names and lemmas, and the words
    of the drawings the bridge knows; longest first, so "tabby cat" is found before "cat"."""
    from timm.data import ImageNetInfo

    from qformer.vision.nanodet import COCO_NAMES

    info = ImageNetInfo()
    words = set(COCO_NAMES) | {"animal", "emoji", "circle", "square", "triangle", "star", "face", "man", "woman",
                               "firefighter", "astronaut", "flag", "camera"}
    for k in range(1000):
        words |= {lemma.strip().lower() for lemma in info.index_to_description(k).split(",")}
    return tuple(sorted(words, key=len, reverse=True))


def nouns(text: str) -> list[str]:
    """The vocabulary's nouns in `text`, each span counted once (singular forms)."""
    words = " ".join(singular(w) for w in re.sub(r"[^\w\s-]", " ", text.lower()).split())
    found = []
    for noun in vocabulary():
        pattern = r"\b" + re.escape(noun) + r"\b"
        if re.search(pattern, words):
            found.append(noun)
            words = re.sub(pattern, " ", words)
    return found


def allowed(noun: str, objects: list[str]) -> bool:
    """A noun is in the photo when an acceptable name equals it or is its head word ("egyptian cat": "cat")."""
    objects = [o.lower() for o in objects]
    return noun in objects or noun.split()[-1] in objects or noun.split()[0] in objects


def _words(text: str) -> str:
    return " " + " ".join(singular(w) for w in normalize_answer(text).split()) + " "


def names(answer: str, acceptable: list[str]) -> bool:
    """Whether `answer` contains one of the acceptable answers as whole words ("an Egyptian cat": "cat")."""
    return any(_words(a) in _words(answer) for a in acceptable)


def score_photos(captioner, rows: list[dict], root: Path) -> dict:
    images = [str(root / r["image"]) for r in rows]
    started = time.perf_counter()
    answers = captioner.caption(images)
    seconds = time.perf_counter() - started
    captions = [a.text for a in answers]
    metrics = caption_scores({str(k): c for k, c in enumerate(captions)},
                             {str(k): r["captions"] for k, r in enumerate(rows)})
    found = [nouns(c) for c in captions]
    metrics.update(
        photos=len(rows),
        main_object_named=sum(names(c, r["main"]) for c, r in zip(captions, rows)) / len(rows),
        no_invented_object=sum(all(allowed(n, r["objects"]) for n in f) for f, r in zip(found, rows)) / len(rows),
        object_recall=sum(any(allowed(n, r["main"]) for n in f) for f, r in zip(found, rows)) / len(rows),
        routed_grounded=sum(a.source == "grounded" for a in answers) / len(rows),
        seconds_per_caption=seconds / len(rows),
    )
    by_kind: dict[str, list[bool]] = {}
    for image, row in zip(images, rows):
        for qa in row["questions"]:
            (reply,) = captioner.ask([image], qa["question"])
            kind = "what_animal" if qa["question"].startswith("what animal") else \
                "how_many" if qa["question"].startswith("how many") else "yes_no"
            by_kind.setdefault(kind, []).append(names(reply.text, qa["answers"]))
    metrics.update({f"answers_{kind}": sum(v) / len(v) for kind, v in by_kind.items()})
    metrics["samples"] = [{"image": r["image"], "caption": c, "nouns": f} for r, c, f in zip(rows, captions, found)]
    return metrics


def score_drawings(captioner, rows: list[dict], root: Path) -> dict:
    images = [str(root / r["image"]) for r in rows]
    answers = captioner.caption(images)
    metrics = caption_scores({str(k): a.text for k, a in enumerate(answers)},
                             {str(k): [r["text"]] for k, r in enumerate(rows)})
    replies = captioner.ask(images, [r["question"] for r in rows])
    metrics.update(examples=len(rows),
                   vqa_accuracy=vqa_accuracy([a.text for a in replies], [[str(r["answer"])] for r in rows]),
                   routed_bridge=sum(a.source == "bridge" for a in answers) / len(rows))
    return metrics


def read_jsonl(path: str | Path, limit: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qformer.training.evaluate_captions",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--photos", help="the photos' JSONL")
    parser.add_argument("--photo-root", default=".", help="folder the photos' image paths are relative to")
    parser.add_argument("--drawings", nargs="*", default=[], help="held-out corpus JSONL files")
    parser.add_argument("--limit", type=int, default=200, help="drawings scored per file")
    parser.add_argument("--paths", nargs="*", default=list(PATHS), choices=PATHS)
    parser.add_argument("--quantize", choices=LM_QUANTIZE, help="the bridge's LM on onnxruntime with these weights")
    parser.add_argument("--out", help="write every metric and the photo captions here (JSON)")
    args = parser.parse_args(argv)
    report: dict = {}
    for path in args.paths:
        captioner = load_captioner(path, quantize=args.quantize)
        if args.photos:
            report[f"{path} / photos"] = score_photos(captioner, read_jsonl(args.photos), Path(args.photo_root))
        for drawings in args.drawings:
            report[f"{path} / {Path(drawings).stem}"] = score_drawings(captioner, read_jsonl(drawings, args.limit),
                                                                       Path(drawings).parent)
    keys = sorted({k for m in report.values() for k in m if k != "samples"})
    print("| path / data | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for name, metrics in report.items():
        print(f"| {name} | " + " | ".join(f"{metrics[k]:.3f}" if isinstance(metrics.get(k), float) else
                                           str(metrics.get(k, "")) for k in keys) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
