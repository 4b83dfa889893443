"""Every score the wildlife pipeline decides on, in one place.

Modelled on SpeciesNet's ensemble combiner: a detector's person or vehicle wins when it is sure;
the classifier's answer is taken at species level only when it is sure, else summed up the
taxonomy; and when even the group is unsure, the answer is only "animal", as the detector saw it.
The scores compared are probabilities of the whole answer: a species' score is p(group | crop) times
p(species | crop, group), so a crop barely put in a group cannot come out as a confident species.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Thresholds:
    # a person or vehicle the detector is at least this sure of is reported as one, whatever the classifier says
    person: float = 0.7
    # below `person`, a person or vehicle box is an animal when the classifier puts at least this on animal
    # classes (on 11 real photos: 0.66 to 0.97 for animals NanoDet called "person", 0.02 to 0.21 for people)
    animal: float = 0.5
    # the best group must score at least this, or the answer is only "animal" (prediction_source "detector")
    group: float = 0.5
    # a species is named at or above this; below, species, genus, family, order and class are summed until one is
    species: float = 0.5
    # a genus or family is named at or above the larger of this and `species`: a taxon summed over many
    # ImageNet classes easily looks sure (deer, which ImageNet lacks, sum up to Bovidae). The three are
    # fitted to 90% right names on tests/data/wildlife_photos.csv (python -m qformer.training.calibrate_wildlife)
    genus: float = 0.95
    family: float = 0.85
    # a detector's animal box stands when its crop's classifier puts at least this on animal classes
    box: float = 0.2
    # a region found only by activation maps stands when its crop and the whole photo both reach this
    region: float = 0.5
    # the cheap coarse classifier's answer stands at or above this; below, the strong one is asked
    routing: float = 0.5
    # with one animal in the photo, the whole photo's scores are mixed into its crop's with this weight
    scene: float = 0.5
    # crops are widened by this share of the box's size on every side, for context
    margin: float = 0.15

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold {f.name!r} must be a number from 0 to 1, got {value!r}")
