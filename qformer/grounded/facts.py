"""What can be said of a photo without inventing anything: the objects a COCO detector boxes, counted
and placed, with their dominant colour, and what an ImageNet classifier calls the whole photo.

Every noun the grounded captioner says comes from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image

from ..vision.boxes import Detection
from ..vision.classifiers import LITE2, Classifier, imagenet_classifier
from ..vision.fusion import fuse
from ..vision.knowledge import Knowledge
from ..vision.nanodet import ANIMALS, NanoDet
from .colour import dominant_colour, plain_colour


@dataclass
class Thing:
    name: str  # "dog", or a finer ImageNet name: "tabby cat"
    count: int
    boxes: list[tuple[float, float, float, float]]  # x, y, w, h as fractions of the photo
    score: float  # the detector's (best) confidence, or the classifier's probability
    source: str  # "detector" (COCO) or "classifier" (ImageNet, the whole photo)
    animal: bool = False
    colour: str | None = None  # of the largest box

    @property
    def salience(self) -> float:
        return sum(w * h for _, _, w, h in self.boxes) * self.score

    @property
    def where(self) -> str:
        x, _, w, _ = max(self.boxes, key=lambda b: b[2] * b[3])
        centre = x + w / 2
        return "on the left" if centre < 0.4 else "on the right" if centre > 0.6 else "in the middle"


@dataclass
class Facts:
    things: list[Thing] = field(default_factory=list)  # most salient first
    classes: list[tuple[str, float]] = field(default_factory=list)  # the classifier's top 3 for the whole photo
    plain: str | None = None  # the colour of a picture that is one flat colour (then there are no things)

    def to_dict(self) -> dict:
        return {"things": [{"name": t.name, "count": t.count, "where": t.where, "colour": t.colour,
                            "score": round(t.score, 3), "source": t.source} for t in self.things],
                "classes": [[name, round(p, 3)] for name, p in self.classes], "plain": self.plain}


def imagenet_names(knowledge: Knowledge | None = None) -> list[str]:
    """A readable name per ImageNet class: WordNet's first lemma, or a longer lemma that begins with it
    ("tabby" -> "tabby cat")."""
    names = []
    for entry in (knowledge or Knowledge.default()).classes:
        lemmas = entry["lemmas"]
        # lower-case only: "Gorilla gorilla" is a scientific name, not a finer common one
        longer = [lemma for lemma in lemmas[1:] if lemma.lower().startswith(lemmas[0].lower() + " ")
                  and (lemma == lemma.lower() or lemmas[0] != lemmas[0].lower())]
        names.append(longer[0] if longer else lemmas[0])
    return names


GROUP_NOUNS = {"bird": "bird", "fish": "fish", "reptile": "reptile", "amphibian": "amphibian"}  # others: "animal"


class FactFinder:
    """`finder(images)` -> `Facts` per photo.

    The detector boxes, counts and places things; the classifier names the whole photo. Where they
    meet: one detected animal takes the classifier's finer name when the classifier's best class is an
    animal at `rename` or more ("cat" -> "tabby cat"; NanoDet's "bird" on a lionfish -> "lionfish");
    an animal the detector missed is added when the classifier is `min_class` sure of it, or as its
    group ("a bird") when the group's classes together reach `min_class`; a detected animal the
    classifier cannot name keeps NanoDet's COCO name only at `coco_sure` or more (NanoDet names
    animals outside COCO after COCO's ten), else it is its group ("an animal"); an unsure person or thing
    (below `sure`) in a photo of an animal is dropped (NanoDet-m calls a close-up of a cat "person" at
    0.6); things other than animals need `min_object`; overlapping animal boxes are one animal."""

    def __init__(self, detector=None, classifier: Classifier | None = None, min_class: float = 0.3,
                 rename: float = 0.15, min_object: float = 0.5, sure: float = 0.7, coco_sure: float = 0.5,
                 knowledge: Knowledge | None = None):
        self.detector = detector or NanoDet(all_classes=True)
        self.classifier = classifier or imagenet_classifier(*LITE2)
        self.min_class, self.rename, self.min_object, self.sure = min_class, rename, min_object, sure
        self.coco_sure = coco_sure
        knowledge = knowledge or Knowledge.default()
        self.names = imagenet_names(knowledge)
        self.animal_classes = {c["index"] for c in knowledge.classes if c["group"]}
        self.group_of = {c["index"]: c["group"] for c in knowledge.classes if c["group"]}

    def __call__(self, images: Sequence[Image.Image]) -> list[Facts]:
        if not images:
            return []
        probabilities = self.classifier.probabilities(images)
        return [self._facts(image, detections, row)
                for image, detections, row in zip(images, self.detector(images), probabilities)]

    def _whole(self, probabilities) -> tuple[Thing | None, bool, float]:
        """The classifier's animal for the whole photo, if any; whether it is a class (else a group);
        and the best class's probability."""
        best, best_p = int(probabilities.argmax()), float(probabilities.max())
        if best in self.animal_classes and best_p >= self.rename:
            return Thing(self.names[best], 1, [(0.0, 0.0, 1.0, 1.0)], best_p, "classifier", animal=True), True, best_p
        noun, score = self._group(probabilities)
        if score >= self.min_class:
            return Thing(noun, 1, [(0.0, 0.0, 1.0, 1.0)], score, "classifier", animal=True), False, best_p
        return None, False, best_p

    def _group(self, probabilities) -> tuple[str, float]:
        """The likeliest animal group's noun ("bird"; "animal" for the rest) and its summed probability."""
        groups: dict[str, float] = {}
        for index, group in self.group_of.items():
            groups[group] = groups.get(group, 0.0) + float(probabilities[index])
        group = max(groups, key=groups.get)
        return GROUP_NOUNS.get(group, "animal"), groups[group]

    def _kept(self, detections: list[Detection], animal_photo: bool) -> list[Detection]:
        animals: list[Detection] = []
        for d in sorted((d for d in detections if d.label in ANIMALS), key=lambda d: -d.conf):
            if fuse(animals, [d], iou=0.5)[len(animals):]:  # a second label on the same animal is dropped
                animals.append(d)
        return animals + [d for d in detections if d.label not in ANIMALS and self._stands(d, animals, animal_photo)]

    def _stands(self, thing: Detection, animals: list[Detection], animal_photo: bool) -> bool:
        if thing.conf < self.min_object:
            return False
        if thing.conf >= self.sure:
            return True
        # an unsure thing in a photo of an animal, or over a detected animal, is mostly that animal
        return not animal_photo and bool(fuse(animals, [thing], iou=0.5)[len(animals):])

    def _facts(self, image: Image.Image, detections, probabilities) -> Facts:
        top = np.argsort(-probabilities, kind="stable")[:3]
        classes = [(self.names[int(k)], float(probabilities[k])) for k in top]
        plain = plain_colour(image)
        if plain is not None:  # whatever the networks make of a blank frame is not in it
            return Facts([], classes, plain)
        whole, named, best_p = self._whole(probabilities)
        grouped: dict[str, Thing] = {}
        for d in sorted(self._kept(detections, whole is not None), key=lambda d: -d.conf):
            name = d.label or d.category
            thing = grouped.setdefault(name, Thing(name, 0, [], d.conf, "detector", animal=name in ANIMALS))
            thing.count += 1
            thing.boxes.append(d.box)
        things = sorted(grouped.values(), key=lambda t: -t.salience)
        animals = [t for t in things if t.animal]
        if whole is not None and named and len(animals) == 1 and animals[0].count == 1:
            animals[0].name, animals[0].source = whole.name, "detector+classifier"  # one animal: the finer name
        elif whole is not None and not animals and (not named or best_p >= self.min_class):
            things.insert(0, whole)  # an animal outside COCO's ten, or of a group no class names surely
        for thing in animals:
            if thing.source == "detector" and thing.score < self.coco_sure:
                # NanoDet names animals outside COCO after COCO's ten ("cat" for a chimpanzee): unsure, say less
                noun, score = self._group(probabilities)
                thing.name = noun if score >= self.min_class else "animal"
        things = _merged(things)  # two unsure animals both called "animal" are two animals
        if not things and best_p >= self.min_class:  # something COCO has no class for: "an espresso"
            best = int(probabilities.argmax())
            things.append(Thing(self.names[best], 1, [(0.0, 0.0, 1.0, 1.0)], best_p, "classifier"))
        for thing in things:
            thing.colour = dominant_colour(_pixels(image, max(thing.boxes, key=lambda b: b[2] * b[3])))
        return Facts(things, classes)


def _merged(things: list[Thing]) -> list[Thing]:
    by_name: dict[str, Thing] = {}
    for thing in things:
        if thing.name in by_name:
            kept = by_name[thing.name]
            kept.count, kept.boxes = kept.count + thing.count, kept.boxes + thing.boxes
            kept.score = max(kept.score, thing.score)
        else:
            by_name[thing.name] = thing
    return list(by_name.values())


def _pixels(image: Image.Image, box: tuple[float, float, float, float]) -> np.ndarray:
    """The middle half of the box (its edges are mostly background), at most 64 pixels a side."""
    x, y, w, h = box
    width, height = image.size
    left, top = int((x + w / 4) * width), int((y + h / 4) * height)
    right, bottom = max(left + 1, int((x + 3 * w / 4) * width)), max(top + 1, int((y + 3 * h / 4) * height))
    crop = image.crop((left, top, right, bottom)).convert("RGB")
    crop.thumbnail((64, 64))
    return np.asarray(crop)
