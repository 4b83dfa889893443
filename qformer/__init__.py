"""qformer: a small trainable Q-Former between a frozen image encoder and a frozen language model.

`import qformer` is light: torch, transformers and the backbones load when a model is first built.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import Blip2Config, ConfigError, LMConfig, QFormerConfig, VisionConfig
from .processing.images import ImageLoadError, load_image

__version__ = "0.1.0"

# public names whose modules import torch and transformers: loaded on first use (PEP 562)
_LAZY = {"Blip2": ".bridge.model", "create_model": ".bridge.factory", "get_config": ".bridge.factory",
         "load_captioner": ".grounded.loading",
         "list_models": ".bridge.factory"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qformer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Blip2",
    "Blip2Config",
    "ConfigError",
    "ImageLoadError",
    "LMConfig",
    "QFormerConfig",
    "VisionConfig",
    "create_model",
    "get_config",
    "list_models",
    "load_captioner",
    "load_image",
]
