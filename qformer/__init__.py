"""qformer: a small trainable Q-Former between a frozen image encoder and a frozen language model."""

from .config import Blip2Config, ConfigError, LMConfig, QFormerConfig, VisionConfig
from .factory import create_model, get_config, list_models
from .images import ImageLoadError, load_image
from .model import Blip2

__version__ = "0.1.0"

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
    "load_image",
]
