"""Wildlife photos: detect animals, sort each into a group, name the species with that group's expert,
and report its habitat and conservation status. Built on `qformer.compose`."""

from .detect import CamDetector, Detection, MegaDetector, TorchvisionDetector
from .identify import Identification, identify
from .knowledge import GROUPS, Knowledge, Species
from .nanodet import NanoDet
from .pipeline import Animal, ImageResult, WildlifePipeline

__all__ = ["Animal", "CamDetector", "Detection", "GROUPS", "Identification", "ImageResult", "Knowledge",
           "MegaDetector", "NanoDet", "Species", "TorchvisionDetector", "WildlifePipeline", "identify"]
