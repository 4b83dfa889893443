"""The command line: `qformer caption | ask | scores | wildlife | train | convert | export | serve | demo | models`."""

from .main import main

__all__ = ["main"]
