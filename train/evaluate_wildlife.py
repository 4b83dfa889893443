"""Score the wildlife pipeline on labelled photos, beside the best single model it is built from:

    python -m qformer.training.evaluate_wildlife LABELS.csv --root PHOTOS [--out metrics.json]

LABELS.csv columns: `file` (relative to --root), `animals` (how many), `group` (one of the pipeline's
groups), `taxa` (acceptable species, genus or family names, `;`-separated: common or scientific
names, any case), `people` (how many) and, optionally, `vehicles` (how many).

Per photo with animals, the most confident animal detection is the answer. A name at species, genus
or family rank is right when it is one of the acceptable names, else wrong; an answer at order,
class or group rank, or only "animal", abstains; no animal detection at all is a miss. The single
model beside it is EfficientNet-Lite2 on the whole photo: its first class, judged by the same names
(the class's common and scientific name, and its lowest taxon).

Photos with no animal count false animal detections at the results file's typical detection
threshold. People and vehicles are matched by count.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from qformer.processing.images import load_image
from qformer.vision.classifiers import LITE2, ImageNetClassifier
from qformer.vision.knowledge import Knowledge
from qformer.wildlife import GROUPS, WildlifePipeline
from qformer.wildlife.identify import identify, one_class
from qformer.wildlife.thresholds import Thresholds

NAMED_RANKS = ("species", "genus", "family")  # an answer at these ranks names the animal
TYPICAL_THRESHOLD = 0.35  # what `qformer wildlife` writes as `typical_detection_threshold`
COUNTED = ("animals", "people", "vehicles")


def read_labels(path: str | Path) -> list[dict]:
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for k, row in enumerate(csv.DictReader(f), start=2):
            missing = {"file", "animals", "group", "taxa", "people"} - set(row)
            if missing:
                raise ValueError(f"{path}: line {k} lacks column(s) {sorted(missing)}")
            if row["group"] and row["group"] not in GROUPS:
                raise ValueError(f"{path}: line {k}: group {row['group']!r} is not one of {GROUPS}")
            rows.append({"file": row["file"], "group": row["group"] or None,
                         "taxa": {t.strip().lower() for t in row["taxa"].split(";") if t.strip()},
                         **{n: int(row.get(n) or 0) for n in COUNTED}})
    return rows


def is_right(animal, taxa: set[str]) -> bool:
    """Whether an answer names the labelled animal. A genus or family must be acceptable itself; a
    species must be, unless the label names only its genus (any species of it is then acceptable)."""
    if animal.name and animal.name.lower() in taxa:
        return True
    if not animal.scientific_name:
        return False
    scientific = animal.scientific_name.lower()
    if scientific in taxa or animal.rank != "species":
        return scientific in taxa
    genus = scientific.split()[0]
    return genus in taxa and not any(t.startswith(genus + " ") for t in taxa)


def class_names(knowledge: Knowledge, index: int) -> set[str]:
    """What an ImageNet class names: its common and scientific name, and its lowest taxon (the
    single model is judged as leniently as a genus or family answer)."""
    entry = knowledge.classes[index]
    names = {entry["name"].lower(), knowledge.name_of(entry["synset"]).lower()}
    if entry["synset"] in knowledge.species:
        scientific = knowledge.species[entry["synset"]].scientific_name.lower()
        names |= {scientific, scientific.split()[0]}
    taxa = knowledge.taxa_of(entry["synset"])
    lowest = next((taxa[r] for r in ("genus", "family") if taxa.get(r)), None)
    return names | ({lowest.lower()} if lowest else set())


def outcome(best, label: dict) -> tuple[str, str]:
    """(rank answered, "right" | "wrong" | "abstained" | "missed") for a photo with animals."""
    if best is None:
        return "none", "missed"
    rank = best.rank or "animal"
    if rank not in NAMED_RANKS:
        return rank, "abstained"
    return rank, "right" if is_right(best, label["taxa"]) else "wrong"


def evaluate(pipeline: WildlifePipeline, labels: list[dict], root: Path) -> tuple[dict, list[dict]]:
    files = [str(root / row["file"]) for row in labels]
    started = time.perf_counter()
    results = pipeline(files)
    seconds = time.perf_counter() - started
    by_rank: dict[str, dict[str, int]] = {}
    totals = dict.fromkeys(("right", "wrong", "abstained", "missed", "group_right"), 0)
    found = {n: [0, 0, 0] for n in COUNTED}  # labelled, detected, matched
    empty = {"photos": 0, "false_detections": 0, "photos_with_false_detections": 0}
    rows = []
    for label, result in zip(labels, results):
        kinds = {"animals": "animal", "people": "person", "vehicles": "vehicle"}
        for n, category in kinds.items():
            detected = sum(a.category == category and a.detection_conf >= TYPICAL_THRESHOLD for a in result.animals)
            found[n][0] += label[n]
            found[n][1] += detected
            found[n][2] += min(label[n], detected)
        animals = [a for a in result.animals if a.category == "animal"]
        row = {"file": label["file"], "failure": result.failure, "answer": None, "rank": None, "outcome": None}
        if label["animals"]:
            best = max(animals, key=lambda a: a.detection_conf, default=None)
            rank, verdict = outcome(best, label)
            row.update(answer=best and best.name, rank=rank, outcome=verdict, group=best and best.group)
            totals[verdict] += 1
            totals["group_right"] += best is not None and best.group == label["group"] and best.name != "animal"
            by_rank.setdefault(rank, dict.fromkeys(("right", "wrong", "abstained", "missed"), 0))[verdict] += 1
        else:
            false = sum(a.detection_conf >= TYPICAL_THRESHOLD for a in animals)
            empty["photos"] += 1
            empty["false_detections"] += false
            empty["photos_with_false_detections"] += bool(false)
            row["false_detections"] = false
        rows.append(row)
    animal_photos = sum(bool(label["animals"]) for label in labels)
    named = totals["right"] + totals["wrong"]
    metrics = {
        "photos": len(labels), "animal_photos": animal_photos, **totals,
        "precision_when_named": totals["right"] / named if named else None,
        "coverage": named / animal_photos if animal_photos else None,
        "coarse_group_accuracy": totals["group_right"] / max(animal_photos, 1),
        "by_rank": by_rank, "no_animal_photos": empty["photos"],
        "false_animal_detections_per_photo": empty["false_detections"] / max(empty["photos"], 1),
        "no_animal_photos_with_false_detections": empty["photos_with_false_detections"],
        **{f"{n}_recall": (m / lab if lab else None) for n, (lab, _, m) in found.items()},
        "images_per_second": len(labels) / seconds,
    }
    return metrics, rows


def single_model(labels: list[dict], root: Path, thresholds: Thresholds = Thresholds(), device: str = "cpu") -> dict:
    """EfficientNet-Lite2 alone on each whole photo, judged three ways: its first class leniently
    (right when the class's name or lowest taxon is acceptable: a "wallaby" for a kangaroo), its first
    class as the pipeline is judged (a "wallaby" is a wrong species), and through the pipeline's own
    decision policy and thresholds (so it may abstain, as the pipeline does)."""
    knowledge, classifier = Knowledge.default(), ImageNetClassifier(*LITE2, device=device)
    animal_classes = {c["index"]: c["synset"] for c in knowledge.classes if c["group"]}
    limits = {"genus": max(thresholds.species, thresholds.genus), "family": max(thresholds.species, thresholds.family)}
    counts = {"lenient_right": 0, "first_class": dict.fromkeys(("right", "wrong"), 0),
              "with_policy": dict.fromkeys(("right", "wrong", "abstained"), 0)}
    for label in (row for row in labels if row["animals"]):
        probabilities = classifier.probabilities([load_image(root / label["file"])])[0]
        top = int(probabilities.argmax())
        counts["lenient_right"] += bool(class_names(knowledge, top) & label["taxa"])
        first = one_class(knowledge.classes[top]["synset"], float(probabilities[top]), knowledge)
        counts["first_class"]["right" if first and is_right(first, label["taxa"]) else "wrong"] += 1
        scores = {synset: float(probabilities[k]) for k, synset in animal_classes.items()}
        found = identify(scores, knowledge, thresholds.species, rank_thresholds=limits)
        verdict = "abstained" if found is None or found.rank not in NAMED_RANKS else \
            "right" if is_right(found, label["taxa"]) else "wrong"
        counts["with_policy"][verdict] += 1
    return {**counts, "animal_photos": sum(bool(row["animals"]) for row in labels)}


def print_tables(metrics: dict, single: dict | None) -> None:
    print("| rank answered | right | wrong | abstained | missed |\n|---|---:|---:|---:|---:|")
    for rank in (*NAMED_RANKS, "order", "class", "group", "animal", "none"):
        if rank in metrics["by_rank"]:
            counts = metrics["by_rank"][rank]
            print(f"| {rank} | " + " | ".join(str(counts[k]) for k in ("right", "wrong", "abstained", "missed")) + " |")
    print("\n| metric | value |\n|---|---:|")
    for key, value in metrics.items():
        if key != "by_rank":
            print(f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |")
    if single:
        policy, first = single["with_policy"], single["first_class"]
        print("\n| EfficientNet-Lite2 alone, whole photo | right | wrong | abstained |\n|---|---:|---:|---:|")
        print(f"| first class, its name or lowest taxon accepted | {single['lenient_right']} | "
              f"{single['animal_photos'] - single['lenient_right']} | 0 |")
        print(f"| first class, judged as the pipeline is | {first['right']} | {first['wrong']} | 0 |")
        print(f"| the pipeline's decision policy and thresholds | {policy['right']} | {policy['wrong']} | "
              f"{policy['abstained']} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qformer.training.evaluate_wildlife",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("labels", help="a CSV of labelled photos (see the module's docstring)")
    parser.add_argument("--root", default=".", help="folder the CSV's file names are relative to")
    parser.add_argument("--out", help="write the metrics and per-photo answers here (JSON)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-single", action="store_true", help="skip the single model beside the pipeline")
    args = parser.parse_args(argv)
    labels, root = read_labels(args.labels), Path(args.root)
    metrics, rows = evaluate(WildlifePipeline.default(args.device), labels, root)
    single = None if args.no_single else single_model(labels, root, device=args.device)
    print_tables(metrics, single)
    if args.out:
        Path(args.out).write_text(json.dumps({"metrics": metrics, "single_model": single, "photos": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
