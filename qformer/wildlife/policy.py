"""The decision policy: from what the models said about one detection to what is reported.

A pure function of scores, like SpeciesNet's ensemble combiner, so it is tested and calibrated
without running a model (`python -m qformer.training.calibrate_wildlife` fits its thresholds):

1. Category. A detector's person or vehicle stands when it is sure, or when the crop's classifier
   finds little animal in it; otherwise it is an animal (unless an animal box already covers it).
2. Evidence. An animal needs some: a detector's animal box is dropped when the classifier finds
   almost no animal in its crop (a hay bale called "sheep"); a region found only by activation maps
   needs its crop and the whole photo both more animal than not (leaves and flowers light up the
   maps of ImageNet's insects).
3. Name. The best group, then the group expert's species, weighted by the group's probability;
   below a rank's threshold, the scores are summed up the taxonomy until one rank is sure; when even
   the group is unsure, only "animal".
"""

from __future__ import annotations

from dataclasses import dataclass

from ..vision.knowledge import GROUPS, Knowledge
from .identify import identify
from .results import Animal
from .thresholds import Thresholds


@dataclass(frozen=True)
class Evidence:
    """What the models said about one detection."""
    box: tuple[float, float, float, float]
    conf: float  # the detector's confidence
    category: str  # what the detector saw: animal, person or vehicle
    groups: dict[str, float]  # p(group | view) for every group, and "not an animal"
    species: dict[str, float] | None = None  # the top group's expert: p(label | view, group)
    from_detector: bool = True  # False: a region of the activation maps, no detector's box
    photo_animal: float = 1.0  # p(animal) of the whole photo, by the strong classifier
    covered: bool = False  # an animal box of the same photo already covers this one

    @property
    def animal_probability(self) -> float:
        return 1.0 - self.groups["not an animal"]


def top_group(groups: dict[str, float]) -> str:
    return max(GROUPS, key=lambda g: groups[g])


def category_of(evidence: Evidence, at: Thresholds) -> str | None:
    """animal, person, vehicle, or None when the detection is dropped."""
    if evidence.category != "animal":
        if evidence.conf >= at.person or evidence.animal_probability < at.animal:
            return evidence.category
        return None if evidence.covered else "animal"  # an unsure person box on an animal is the animal
    if evidence.from_detector:
        return "animal" if evidence.animal_probability >= at.box else None
    sure = min(evidence.animal_probability, evidence.photo_animal) >= at.region
    return "animal" if sure else None


def decide(evidence: Evidence, knowledge: Knowledge, at: Thresholds = Thresholds(),
           country: str | None = None, species_threshold: float | None = None) -> Animal | None:
    """The reported animal, person or vehicle; None when the detection is dropped."""
    category = category_of(evidence, at)
    if category is None:
        return None
    animal = Animal(evidence.box, evidence.conf, category)
    if category != "animal":
        return animal  # a person or vehicle is reported as the detector saw it
    group = top_group(evidence.groups)
    animal.group, animal.group_score = group, evidence.groups[group]
    if animal.group_score < at.group:  # unsure even of the group: say only what is certain
        animal.name, animal.score = "animal", evidence.conf
        return animal
    animal.name, animal.rank, animal.score, animal.prediction_source = group, "group", animal.group_score, "coarse"
    if not evidence.species:
        return animal
    species = at.species if species_threshold is None else species_threshold
    found = identify(evidence.species, knowledge, species, country, group_probability=animal.group_score,
                     rank_thresholds={"genus": max(species, at.genus), "family": max(species, at.family)})
    if found is None:
        return animal
    animal.name, animal.rank, animal.score = found.name, found.rank, found.score
    animal.prediction_source, animal.suppressed_by_country = found.prediction_source, found.suppressed
    animal.scientific_name = found.scientific_name
    # a rollup is named by its taxon ("Ardeidae"); a sentence says "heron"
    animal.common_name = found.name if found.label else knowledge.noun(found.name)
    if found.label in knowledge.species:
        entry = knowledge.species[found.label]
        animal.habitat = entry.habitat
        animal.iucn_category, animal.iucn_year = entry.iucn_category, entry.iucn_year
        animal.domesticated = entry.domesticated
        animal.breed = entry.breed if found.prediction_source == "expert" else None  # summed breeds: unsure which
    return animal
