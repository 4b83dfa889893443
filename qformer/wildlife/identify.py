"""From an expert's species scores to an answer: geofence, then the species if it is sure enough,
else the lowest taxon (genus, family, order, class) whose summed score is."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .knowledge import RANKS, Knowledge


@dataclass
class Identification:
    name: str  # "tiger", or the taxon: "Panthera"
    rank: str  # "species" (breeds included), "genus", "family", "order" or "class"
    score: float
    prediction_source: str  # "expert" or "rollup"
    label: str | None = None  # the species' label, when named at species level
    suppressed: list[str] = field(default_factory=list)  # species the country filter removed


def identify(scores: dict[str, float], knowledge: Knowledge, threshold: float = 0.5,
             country: str | None = None, group_probability: float = 1.0,
             rank_thresholds: Mapping[str, float] | None = None) -> Identification | None:
    """None when even the class is below its threshold (or the country filter left nothing):
    the caller falls back to the coarse group. `threshold` is the species'; `rank_thresholds` may
    set genus, family, order or class higher (a family summed over many classes is easily "sure").

    `scores` are an expert's, p(species | crop, group); `group_probability` is p(group | crop). Their
    product is the species' probability (a mixture of experts with soft gating), so a crop the
    coarse classifier barely put in this group cannot come out as a confident species."""
    suppressed = []
    if country:
        suppressed = [label for label in scores if knowledge.occurs_in(label, country) is False]
        kept = {k: v for k, v in scores.items() if k not in suppressed}
        total = sum(kept.values())
        if total <= 0:
            return None
        scores = {k: v / total for k, v in kept.items()}
    if not scores:
        return None
    scores = {k: v * group_probability for k, v in scores.items()}
    best = max(scores, key=scores.get)
    # only species with a knowledge-base entry are named; the rest can still count toward a taxon
    if scores[best] >= threshold and best in knowledge.species:
        return Identification(knowledge.name_of(best), "species", scores[best], "expert", best, suppressed)
    # breeds of one species (tabby, Persian, ...) add up to the species
    by_species: dict[str, list[str]] = {}
    for label in scores:
        if label in knowledge.species:
            by_species.setdefault(knowledge.species[label].scientific_name, []).append(label)
    if by_species:
        members = max(by_species.values(), key=lambda labels: sum(scores[k] for k in labels))
        total = sum(scores[k] for k in members)
        if total >= threshold and len(members) > 1:
            top = max(members, key=scores.get)
            return Identification(knowledge.species[top].common_name, "species", total, "rollup", top, suppressed)
    for rank in RANKS:
        sums: dict[str, float] = {}
        for label, score in scores.items():
            taxon = knowledge.taxa_of(label).get(rank)
            if taxon:
                sums[taxon] = sums.get(taxon, 0.0) + score
        if sums:
            taxon = max(sums, key=sums.get)
            if sums[taxon] >= (rank_thresholds or {}).get(rank, threshold):
                return Identification(taxon, rank, sums[taxon], "rollup", None, suppressed)
    return None
