"""Captions and answers for real photos, grounded in what a detector and a classifier found, and the
default captioner that routes photos here and drawings to the trained bridge."""

from .captioner import Answer, BridgeCaptioner, Captioner, GroundedCaptioner, RoutedCaptioner
from .facts import FactFinder, Facts, Thing
from .loading import CAPTIONER_PRESETS, load_captioner
from .router import PhotoRouter

__all__ = ["Answer", "BridgeCaptioner", "CAPTIONER_PRESETS", "Captioner", "FactFinder", "Facts", "GroundedCaptioner",
           "PhotoRouter", "RoutedCaptioner", "Thing", "load_captioner"]
