"""From an expert's species scores to an answer: geofence, then the best class if it is sure enough
(a species, or the genus or family that an ImageNet class such as "flamingo" stands for), else the
lowest taxon (genus, family, order, class) whose summed score is."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..vision.knowledge import RANKS, Knowledge


@dataclass
class Identification:
    name: str  # "tiger", or the taxon: "Panthera"
    rank: str  # "species" (breeds included), "genus", "family", "order" or "class"
    score: float
    prediction_source: str  # "expert" or "rollup"
    label: str | None = None  # the class's label, when one class is named (not a sum)
    scientific_name: str | None = None
    suppressed: list[str] = field(default_factory=list)  # species the country filter removed


def one_class(label: str, score: float, knowledge: Knowledge, suppressed: list[str] | None = None
              ) -> Identification | None:
    """What one class names on its own: its species, or the genus or family it stands for (ImageNet's
    "flamingo" is the family Phoenicopteridae); None for a class the knowledge base cannot place."""
    if label in knowledge.species:
        species = knowledge.species[label]
        return Identification(knowledge.name_of(label), "species", score, "expert", label, species.scientific_name,
                              list(suppressed or []))
    taxa = knowledge.taxa_of(label)
    rank = next((r for r in ("genus", "family") if taxa.get(r)), None)
    if rank is None:
        return None
    return Identification(knowledge.name_of(label), rank, score, "expert", label, taxa[rank], list(suppressed or []))


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
    limits = dict(rank_thresholds or {})
    best = max(scores, key=scores.get)
    single = one_class(best, scores[best], knowledge, suppressed)
    # a class that stands for a whole genus or family ("flamingo", "hare") needs that rank's threshold,
    # not the species': such a class is where ImageNet puts the animals it has no class for (a rabbit
    # is a "hare")
    if single and scores[best] >= max(threshold, limits.get(single.rank, threshold)):
        return single
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
            species = knowledge.species[top]
            return Identification(species.common_name, "species", total, "rollup", top,
                                  species.scientific_name, suppressed)
    for rank in RANKS:
        sums: dict[str, float] = {}
        for label, score in scores.items():
            taxon = knowledge.taxa_of(label).get(rank)
            if taxon:
                sums[taxon] = sums.get(taxon, 0.0) + score
        if sums:
            taxon = max(sums, key=sums.get)
            if sums[taxon] >= limits.get(rank, threshold):
                return Identification(taxon, rank, sums[taxon], "rollup", None, taxon, suppressed)
    return None
