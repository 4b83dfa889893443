"""The wildlife pipeline on the composition graph:

    detect -> crop -> coarse group (cheap model; a stronger one when unsure) -> that group's expert
    -> species, or a higher taxon when unsure -> country filter -> knowledge base.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from ..compose import Chain, Graph, Node, Route
from ..images import ImageInput, ImageLoadError, load_image
from .classifiers import LITE0, LITE2, CoarseClassifier, ImageNetClassifier, SpeciesExpert
from .detect import CamDetector, Detection
from .identify import identify
from .knowledge import GROUPS, Knowledge, check_country


@dataclass
class Animal:
    box: tuple[float, float, float, float]  # x, y, w, h as fractions of the image
    detection_conf: float
    category: str  # animal, person or vehicle (what the detector saw)
    group: str | None = None  # mammal, bird, ...
    group_score: float = 0.0
    name: str | None = None  # species common name, or the taxon it rolled up to
    rank: str | None = None  # species, genus, family, order, class or group
    score: float = 0.0
    prediction_source: str = "detector"  # expert, rollup, coarse or detector
    scientific_name: str | None = None
    habitat: str | None = None
    iucn_category: str | None = None
    iucn_year: int | None = None
    domesticated: bool | None = None
    breed: str | None = None
    suppressed_by_country: list[str] = field(default_factory=list)


@dataclass
class ImageResult:
    file: str
    animals: list[Animal] = field(default_factory=list)
    failure: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ImageResult:
        animals = [Animal(**{**a, "box": tuple(a["box"])}) for a in data["animals"]]
        return cls(data["file"], animals, data["failure"], data["timings"])


class WildlifePipeline:
    """`WildlifePipeline.default()` uses EfficientNet-Lite0 (detection by activation maps, coarse
    groups) and EfficientNet-Lite2 (experts), both from PyPI. Any part can be swapped for your own."""

    def __init__(self, detector, coarse, experts: dict[str, object], knowledge: Knowledge,
                 strong_coarse=None, species_threshold: float = 0.5, coarse_threshold: float = 0.5,
                 country: str | None = None, batch_size: int = 8, cascade: bool = True, min_group: float = 0.5,
                 crop_margin: float = 0.15):
        self.detector, self.coarse, self.strong_coarse, self.experts = detector, coarse, strong_coarse, experts
        self.knowledge, self.species_threshold, self.coarse_threshold = knowledge, species_threshold, coarse_threshold
        self.min_group = min_group  # below it, the answer is only "animal", as the detector saw it
        self.crop_margin = crop_margin
        self.country, self.cascade = check_country(country), cascade
        coarse_node = Node("coarse", self._coarse(coarse), ["crops"], "groups", batch_size=batch_size)
        if strong_coarse is not None:
            strong = Node("coarse (strong)", self._coarse(strong_coarse), ["crops"], "groups", batch_size=batch_size)
            coarse_node = Route("coarse routing", coarse_node, strong, self._confident)
        self.graph = Graph(Chain(
            "wildlife",
            Node("detect", detector, ["image"], "detections", batch_size=batch_size),
            Node("crop", lambda image, detections: [d.crop(image, self.crop_margin) for d in detections],
                 ["image", "detections"], "crops"),
            coarse_node,
            Node("experts", self._experts, ["crops", "groups"], "species_scores", batch_size=batch_size),
            Node("identify", self._identify, ["detections", "groups", "species_scores", "country", "threshold"],
                 "animals"),
        ))

    @classmethod
    def default(cls, device: str | torch.device = "cpu", expert_heads: dict[str, str] | None = None,
                **kwargs) -> WildlifePipeline:
        """`expert_heads` maps groups to heads trained by `python -m qformer.training.expert`; they replace
        the default experts of those groups."""
        from .expert_head import TrainedExpert

        knowledge = Knowledge.default()
        lite0, lite2 = ImageNetClassifier(*LITE0, device=device), ImageNetClassifier(*LITE2, device=device)
        experts = {}
        for group in GROUPS:
            classes = knowledge.classes_of(group)
            experts[group] = SpeciesExpert(lite2, [c["index"] for c in classes], [c["synset"] for c in classes], group)
        for group, folder in (expert_heads or {}).items():
            if group not in GROUPS:
                raise ValueError(f"expert head for unknown group {group!r}; groups are {GROUPS}")
            experts[group] = TrainedExpert.load(folder, device, knowledge=knowledge)
        return cls(CamDetector(lite0, knowledge), CoarseClassifier(lite0, knowledge), experts, knowledge,
                   strong_coarse=CoarseClassifier(lite2, knowledge), **kwargs)

    def __call__(self, images: Sequence[ImageInput], names: Sequence[str] | None = None, workers: int = 1,
                 country: str | None = None, species_threshold: float | None = None) -> list[ImageResult]:
        """One result per input; an unreadable image gets `failure` and the others go on.
        `workers` threads decode the images; `country` and `species_threshold` override the
        pipeline's own for this call (so concurrent callers can differ)."""
        country = check_country(country) or self.country
        threshold = self.species_threshold if species_threshold is None else species_threshold
        names = list(names) if names is not None else [str(i) if isinstance(i, (str, Path)) else f"image-{k}"
                                                       for k, i in enumerate(images)]
        results = [ImageResult(n) for n in names]
        with ThreadPoolExecutor(max(1, workers)) as pool:
            decoded = list(pool.map(_try_load, images))
        loaded, slots = [], []
        for k, image in enumerate(decoded):
            if isinstance(image, ImageLoadError):
                results[k].failure = str(image)
            else:
                loaded.append(image)
                slots.append(k)
        states = [{"image": image, "country": country, "threshold": threshold} for image in loaded]
        for k, run in zip(slots, self.graph.map(states)):
            results[k].animals, results[k].timings = run["animals"], run.timings
        return results

    # --- the graph's nodes, over batches of images ----------------------------------------------

    def _coarse(self, classifier):
        def classify(crops_per_image: list[list[Image.Image]]) -> list[list[dict[str, float]]]:
            flat = classifier([c for crops in crops_per_image for c in crops])
            return _split(flat, crops_per_image)

        return classify

    def _confident(self, state: dict) -> bool:
        return all(max(g[k] for k in GROUPS) >= self.coarse_threshold or g["not an animal"] >= self.coarse_threshold
                   for g in state["groups"])

    def _experts(self, crops_per_image: list[list[Image.Image]], groups_per_image: list[list[dict]]) -> list[list]:
        crops = [c for cs in crops_per_image for c in cs]
        groups = [_top_group(g) for gs in groups_per_image for g in gs]
        scores: list[dict | None] = [None] * len(crops)
        # the cascade asks only the crop's own group's expert; without it, every expert sees every crop
        for group, expert in self.experts.items():
            members = [i for i, g in enumerate(groups) if g == group or not self.cascade]
            answers = expert([crops[i] for i in members]) if members else []
            for i, answer in zip(members, answers):
                if groups[i] == group:
                    scores[i] = answer
        return _split(scores, crops_per_image)

    def _identify(self, detections: list[Detection], groups: list[dict], species_scores: list,
                  country: str | None, threshold: float) -> list[Animal]:
        animals = []
        for detection, group_scores, scores in zip(detections, groups, species_scores):
            animal = Animal(detection.box, detection.conf, detection.category)
            animals.append(animal)
            if detection.category != "animal":
                continue  # a person or vehicle is reported as the detector saw it
            group = _top_group(group_scores)
            animal.group, animal.group_score = group, group_scores[group]
            if group_scores[group] < self.min_group:  # unsure even of the group: say only what is certain
                animal.name, animal.score = "animal", detection.conf
                continue
            animal.name, animal.rank, animal.score, animal.prediction_source = group, "group", group_scores[group], "coarse"
            found = identify(scores, self.knowledge, threshold, country, group_probability=group_scores[group]) if scores else None
            if found is None:
                continue
            animal.name, animal.rank, animal.score = found.name, found.rank, found.score
            animal.prediction_source, animal.suppressed_by_country = found.prediction_source, found.suppressed
            if found.label in self.knowledge.species:
                species = self.knowledge.species[found.label]
                animal.scientific_name, animal.habitat = species.scientific_name, species.habitat
                animal.iucn_category, animal.iucn_year = species.iucn_category, species.iucn_year
                animal.domesticated = species.domesticated
                animal.breed = species.breed if found.prediction_source == "expert" else None  # summed breeds: unsure which
        return animals


def _try_load(image: ImageInput) -> Image.Image | ImageLoadError:
    try:
        return load_image(image)
    except ImageLoadError as e:
        return e


def _top_group(scores: dict[str, float]) -> str:
    return max(GROUPS, key=lambda g: scores[g])


def _split(flat: list, shape_like: list[list]) -> list[list]:
    out, start = [], 0
    for items in shape_like:
        out.append(flat[start : start + len(items)])
        start += len(items)
    return out
