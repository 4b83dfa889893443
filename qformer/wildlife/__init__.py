"""Wildlife photos: detect animals, people and vehicles, sort each animal into a group, name the species
with that group's expert, and report its habitat and conservation status. Built on `qformer.compose`."""

from .detect import CamDetector, Detection, MegaDetector, TorchvisionDetector
from .fusion import FusedDetector
from .identify import Identification, identify
from .knowledge import GROUPS, Knowledge, Species
from .nanodet import NanoDet
from .pipeline import ImageResult, WildlifePipeline
from .policy import Animal, Evidence, decide
from .thresholds import Thresholds

__all__ = ["Animal", "CamDetector", "Detection", "Evidence", "FusedDetector", "GROUPS", "Identification",
           "ImageResult", "Knowledge", "MegaDetector", "NanoDet", "Species", "Thresholds", "TorchvisionDetector",
           "WildlifePipeline", "decide", "identify"]
