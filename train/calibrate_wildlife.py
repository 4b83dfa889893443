"""Fit the wildlife pipeline's naming thresholds to a precision target on labelled photos:

    python -m qformer.training.calibrate_wildlife LABELS.csv --root PHOTOS [--precision 0.95]
        [--evidence evidence.json]

The models run once (their scores are kept in --evidence, and read from it when it exists); the
decision policy (`qformer.wildlife.policy.decide`, a pure function) is then replayed for every
combination of the species, genus and family thresholds. Among those whose answers at species or
genus rank are right at least --precision of the time, the one naming the most animals right (at
species, genus or family rank) wins, then the one with fewest wrong names, then the one naming most
at species rank, then the higher thresholds. Labels as `evaluate_wildlife` reads them.
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import asdict, replace
from pathlib import Path

from qformer.vision.knowledge import Knowledge
from qformer.wildlife import Thresholds, WildlifePipeline
from qformer.wildlife.policy import Evidence, decide

from .evaluate_wildlife import outcome, read_labels

GRID = [round(0.1 + 0.05 * k, 2) for k in range(18)]  # 0.1 .. 0.95
PRECISE_RANKS = ("species", "genus", "family")  # every answer that names the animal counts toward precision


def collect(labels: list[dict], root: Path, device: str = "cpu") -> list[list[Evidence]]:
    results = WildlifePipeline.default(device)([str(root / row["file"]) for row in labels], keep_evidence=True)
    return [result.evidence or [] for result in results]


def replay(evidence: list[list[Evidence]], labels: list[dict], knowledge: Knowledge, at: Thresholds) -> dict:
    counts = dict.fromkeys(("right", "wrong", "abstained", "missed", "species_right", "precise_right",
                            "precise_wrong"), 0)
    for found, label in zip(evidence, labels):
        if not label["animals"]:
            continue
        animals = [a for a in (decide(e, knowledge, at) for e in found) if a is not None and a.category == "animal"]
        best = max(animals, key=lambda a: a.detection_conf, default=None)
        rank, verdict = outcome(best, label)
        counts[verdict] += 1
        counts["species_right"] += verdict == "right" and rank == "species"
        if rank in PRECISE_RANKS:
            counts[f"precise_{verdict}"] += 1
    precise = counts["precise_right"] + counts["precise_wrong"]
    return {**counts, "precision": counts["precise_right"] / precise if precise else 1.0}


def fit(evidence: list[list[Evidence]], labels: list[dict], precision: float,
        base: Thresholds = Thresholds()) -> tuple[Thresholds, dict] | None:
    """The best thresholds that reach `precision`, with their scores; None when none do."""
    knowledge, best = Knowledge.default(), None
    for species, genus, family in itertools.product(GRID, GRID, GRID):
        if genus < species or family < species:
            continue  # a rank above is never named more easily than the species (policy takes the larger)
        at = replace(base, species=species, genus=genus, family=family)
        scores = replay(evidence, labels, knowledge, at)
        if scores["precision"] >= precision:
            key = (scores["right"], -scores["wrong"], scores["species_right"], species + genus + family)
            if best is None or key > best[0]:
                best = (key, at, scores)
    return None if best is None else (best[1], best[2])


def read_evidence(path: Path) -> list[list[Evidence]]:
    return [[Evidence(**{**e, "box": tuple(e["box"])}) for e in found] for found in json.loads(path.read_text())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qformer.training.calibrate_wildlife",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("labels")
    parser.add_argument("--root", default=".")
    parser.add_argument("--precision", type=float, nargs="+", default=[0.95, 0.9, 0.85, 0.8],
                        help="targets for the share of species or genus answers that are right")
    parser.add_argument("--evidence", type=Path, help="the models' scores: read when the file exists, else written")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if not all(0.0 < p <= 1.0 for p in args.precision):
        parser.error(f"--precision takes numbers above 0 and at most 1, got {args.precision}")
    labels = read_labels(args.labels)
    if args.evidence and args.evidence.exists():
        evidence = read_evidence(args.evidence)
        if len(evidence) != len(labels):
            parser.error(f"{args.evidence} holds {len(evidence)} photos; {args.labels} labels {len(labels)}")
    else:
        evidence = collect(labels, Path(args.root), args.device)
        if args.evidence:
            args.evidence.write_text(json.dumps([[asdict(e) for e in found] for found in evidence]))
    rows = {"current defaults": (Thresholds(), replay(evidence, labels, Knowledge.default(), Thresholds()))}
    for target in sorted(args.precision, reverse=True):
        rows[f"fitted to precision {target}"] = fit(evidence, labels, target)
    print("| thresholds | species | genus | family | right | wrong | abstained | missed | "
          "precision at species or genus |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, fitted in rows.items():
        if fitted is None:
            print(f"| {name} | not reached | | | | | | | |")
            continue
        t, s = fitted
        print(f"| {name} | {t.species} | {t.genus} | {t.family} | {s['right']} | {s['wrong']} | {s['abstained']} "
              f"| {s['missed']} | {s['precision']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
