"""What the wildlife pipeline reports: per image an `ImageResult` of `Animal`s (people and vehicles
too), and the same results in MegaDetector's batch output format (1.6), which camera-trap tools (Timelapse, AddaxAI,
the MegaDetector postprocessing scripts) read, and which MegaDetector's own validator accepts.

Per image: `file`, and `detections` (each with `category`, `conf`, `bbox` = normalised [x, y, w, h]
from the top-left corner, and `classifications` = [[class id, score]]) or a `failure` with null
detections. Classes carry taxonomy strings in `classification_category_descriptions`. Our extra
fields (ranks, where the answer came from, IUCN status) ride along under `qformer`, which readers of
the format ignore.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ..files import write_text_atomically
from ..vision.boxes import CATEGORIES
from ..vision.knowledge import Knowledge

if TYPE_CHECKING:
    from .policy import Evidence

FORMAT_VERSION = "1.6"
DETECTION_CATEGORIES = {str(i + 1): name for i, name in enumerate(CATEGORIES)}
CATEGORY_IDS = {name: key for key, name in DETECTION_CATEGORIES.items()}


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
    common_name: str | None = None  # what a sentence calls the answer: "lion", "heron" (for Ardeidae)
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
    # what the models said about each detection, kept when asked for (calibration); not serialised
    evidence: list[Evidence] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "evidence"}

    @classmethod
    def from_dict(cls, data: dict) -> ImageResult:
        animals = [Animal(**{**a, "box": tuple(a["box"])}) for a in data["animals"]]
        return cls(data["file"], animals, data["failure"], data["timings"])


def to_megadetector(results: Iterable[ImageResult], detector: str, classifier: str,
                    detector_metadata: dict | None = None, knowledge: Knowledge | None = None) -> dict:
    """The batch file for `results`. `detector_metadata` may recommend thresholds to downstream tools
    (`typical_detection_threshold`, `conservative_detection_threshold`)."""
    knowledge = knowledge or Knowledge.default()
    classes: dict[str, str] = {}  # name -> id, numbered in order of first appearance
    images = []
    for result in results:
        entry: dict = {"file": result.file}
        if result.failure is not None:
            images.append({**entry, "failure": result.failure, "detections": None})
            continue
        entry["detections"] = []
        for animal in result.animals:
            detection = {"category": CATEGORY_IDS[animal.category], "conf": float(round(animal.detection_conf, 4)),
                         "bbox": [float(round(v, 4)) for v in animal.box]}
            if animal.name is not None:
                class_id = classes.setdefault(animal.name, str(len(classes) + 1))
                detection["classifications"] = [[class_id, float(round(animal.score, 4))]]
                detection["qformer"] = {k: getattr(animal, k) for k in (
                    "rank", "prediction_source", "group", "group_score", "scientific_name", "common_name", "habitat",
                    "iucn_category", "iucn_year", "domesticated", "breed", "suppressed_by_country")}
                detection["qformer"]["group_score"] = float(round(animal.group_score, 4))  # as precise as conf
            entry["detections"].append(detection)
        entry["max_detection_conf"] = max((d["conf"] for d in entry["detections"]), default=0.0)
        images.append(entry)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    info = {"format_version": FORMAT_VERSION, "detector": detector, "detection_completion_time": now,
            "classifier": classifier, "classification_completion_time": now}
    if detector_metadata:
        info["detector_metadata"] = dict(detector_metadata)
    return {
        "info": info,
        "detection_categories": DETECTION_CATEGORIES,
        "classification_categories": {class_id: name for name, class_id in classes.items()},
        "classification_category_descriptions": {class_id: _taxonomy(name, knowledge)
                                                 for name, class_id in classes.items()},
        "images": images,
    }


def _taxonomy(name: str, knowledge: Knowledge) -> str:
    """A searchable taxonomy string, class first: "mammalia;carnivora;felidae;felis;felis catus"."""
    return ";".join(knowledge.lineage(name) or [name]).lower()


def from_megadetector(data: dict) -> list[ImageResult]:
    """Results back from a file `to_megadetector` wrote (to resume a finished run with new images).
    Raises ValueError when the file does not have that shape."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError("it has no 'images' list, so it is not a MegaDetector batch results file")
    names = data.get("classification_categories") or {}
    results = []
    for entry in data["images"]:
        result = ImageResult(str(entry["file"]), failure=entry.get("failure"))
        for detection in entry.get("detections") or []:
            animal = Animal(tuple(detection["bbox"]), float(detection["conf"]),
                            DETECTION_CATEGORIES[detection["category"]])
            if detection.get("classifications"):
                class_id, animal.score = detection["classifications"][0]
                animal.name = names[class_id]
                for key, value in (detection.get("qformer") or {}).items():
                    if hasattr(animal, key):
                        setattr(animal, key, value)
            result.animals.append(animal)
        results.append(result)
    return results


def write_json(data: dict, path: str | Path) -> None:
    """Write atomically: a crash mid-write leaves the previous file, never half of one."""
    write_text_atomically(path, json.dumps(data, indent=1, ensure_ascii=False))
