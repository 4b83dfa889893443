"""Score the wildlife pipeline on labelled photos:

    python -m qformer.training.evaluate_wildlife LABELS.csv --root PHOTOS [--out metrics.json]

LABELS.csv columns: `file` (relative to --root), `animals` (how many), `group` (one of the pipeline's
groups), `taxa` (acceptable species or genus names, `;`-separated: common or scientific names, any
case), `people` (how many). Per photo the most confident animal detection is the answer.

Metrics: coarse-group accuracy (an answer of only "animal" claims no group, so it does not count);
species-or-genus accuracy (the answer names an acceptable species or
genus); confident-wrong answers (a species or genus named under a wrong group: the worst outcome for
people filtering by species); wrong species or genus (named, but not an acceptable one, in any
group); abstentions (answered only "animal"); detection recall and precision
of animals by count; person recall and precision by count; images per second.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from qformer.wildlife import GROUPS, WildlifePipeline

CONFIDENT_RANKS = ("species", "genus")


def read_labels(path: str | Path) -> list[dict]:
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for k, row in enumerate(csv.DictReader(f), start=2):
            missing = {"file", "animals", "group", "taxa", "people"} - set(row)
            if missing:
                raise ValueError(f"{path}: line {k} lacks column(s) {sorted(missing)}")
            if row["group"] and row["group"] not in GROUPS:
                raise ValueError(f"{path}: line {k}: group {row['group']!r} is not one of {GROUPS}")
            rows.append({"file": row["file"], "animals": int(row["animals"]), "group": row["group"] or None,
                         "taxa": {t.strip().lower() for t in row["taxa"].split(";") if t.strip()},
                         "people": int(row["people"])})
    return rows


def names_of(animal) -> set[str]:
    """What an answer names: its name, its scientific name, and that name's genus."""
    names = {animal.name.lower()} if animal.name else set()
    if animal.scientific_name:
        names |= {animal.scientific_name.lower(), animal.scientific_name.split()[0].lower()}
    return names


def evaluate(pipeline: WildlifePipeline, labels: list[dict], root: Path) -> tuple[dict, list[dict]]:
    files = [str(root / row["file"]) for row in labels]
    started = time.perf_counter()
    results = pipeline(files)
    seconds = time.perf_counter() - started
    counts = dict.fromkeys(("animal_photos", "group_right", "taxon_right", "taxon_wrong", "confident_wrong", "abstained",
                            "animals_labelled", "animals_found", "animals_matched", "people_labelled",
                            "people_found", "people_matched"), 0)
    rows = []
    for label, result in zip(labels, results):
        animals = [a for a in result.animals if a.category == "animal"]
        people = [a for a in result.animals if a.category == "person"]
        counts["animals_labelled"] += label["animals"]
        counts["animals_found"] += len(animals)
        counts["animals_matched"] += min(label["animals"], len(animals))
        counts["people_labelled"] += label["people"]
        counts["people_found"] += len(people)
        counts["people_matched"] += min(label["people"], len(people))
        best = max(animals, key=lambda a: a.detection_conf, default=None)
        row = {"file": label["file"], "failure": result.failure, "answer": None, "rank": None, "group": None}
        if label["animals"]:
            counts["animal_photos"] += 1
            if best is not None:
                row.update(answer=best.name, rank=best.rank, group=best.group)
                abstained = best.name in (None, "animal")  # it says only "animal": it claims no group
                group_right = best.group == label["group"] and not abstained
                confident = best.rank in CONFIDENT_RANKS
                counts["group_right"] += group_right
                taxon_right = confident and bool(names_of(best) & label["taxa"])
                counts["taxon_right"] += taxon_right
                counts["taxon_wrong"] += confident and not taxon_right
                counts["confident_wrong"] += confident and best.group != label["group"]
                counts["abstained"] += abstained
        rows.append(row)
    photos = max(counts["animal_photos"], 1)
    metrics = {
        "photos": len(labels),
        "animal_photos": counts["animal_photos"],
        "coarse_group_accuracy": counts["group_right"] / photos,
        "species_or_genus_accuracy": counts["taxon_right"] / photos,
        "wrong_species_or_genus": counts["taxon_wrong"],
        "confident_wrong": counts["confident_wrong"],
        "abstained": counts["abstained"],
        "detection_recall": counts["animals_matched"] / max(counts["animals_labelled"], 1),
        "detection_precision": counts["animals_matched"] / max(counts["animals_found"], 1),
        "person_recall": counts["people_matched"] / counts["people_labelled"] if counts["people_labelled"] else None,
        "person_precision": counts["people_matched"] / counts["people_found"] if counts["people_found"] else None,
        "images_per_second": len(labels) / seconds,
    }
    return metrics, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qformer.training.evaluate_wildlife", description=__doc__.splitlines()[0])
    parser.add_argument("labels", help="a CSV of labelled photos (see the module's docstring)")
    parser.add_argument("--root", default=".", help="folder the CSV's file names are relative to")
    parser.add_argument("--out", help="write the metrics and per-photo answers here (JSON)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    labels = read_labels(args.labels)
    metrics, rows = evaluate(WildlifePipeline.default(args.device), labels, Path(args.root))
    print("| metric | value |\n|---|---:|")
    for key, value in metrics.items():
        print(f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"metrics": metrics, "photos": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
