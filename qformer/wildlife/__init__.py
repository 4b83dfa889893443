"""Wildlife photos: detect animals, people and vehicles, sort each animal into a group, name the species
with that group's expert, and report its habitat and conservation status. Built on `qformer.compose`."""

from ..vision.boxes import Detection, Detector
from ..vision.cam import CamDetector
from ..vision.fusion import FusedDetector
from ..vision.knowledge import GROUPS, Knowledge, Species
from ..vision.nanodet import NanoDet
from .identify import Identification, identify
from .pipeline import WildlifePipeline
from .policy import Evidence, decide
from .results import Animal, ImageResult
from .thresholds import Thresholds

__all__ = ["Animal", "CamDetector", "Detection", "Detector", "Evidence", "FusedDetector", "GROUPS", "Identification",
           "ImageResult", "Knowledge", "MegaDetector", "NanoDet", "Species", "Thresholds", "TorchvisionDetector",
           "WildlifePipeline", "decide", "identify"]


def __getattr__(name: str):
    # the adapters of torch detectors load torch only when asked for: the default runs without it
    if name in ("MegaDetector", "TorchvisionDetector"):
        from ..vision import detect

        return getattr(detect, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
