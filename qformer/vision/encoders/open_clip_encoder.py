"""open_clip visual towers: the transformer's patch tokens."""

from __future__ import annotations

from pathlib import Path

import torch

from ...config import ConfigError, VisionConfig
from ...extras import require
from ...pretrained.weights import WeightsError
from .base import FrozenImageEncoder, Preprocess, allowed_kwargs, merge_preprocess

open_clip = require("open_clip", "the open_clip vision backend")  # a sentence with its pip command, if missing
from open_clip.transformer import VisionTransformer  # noqa: E402

# Settings of the model's own config that a config may override; loader options are refused.
OPEN_CLIP_ARCHITECTURE_KWARGS = frozenset({
    "embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale", "init_logit_bias",
    "force_quick_gelu", "force_patch_dropout", "force_image_size",
})


class OpenClipEncoder(FrozenImageEncoder):
    """`open_clip.create_model(model_name, pretrained)`; only the visual tower is kept."""

    def __init__(self, config: VisionConfig):
        super().__init__(config.dtype)
        kwargs = allowed_kwargs(config.model_kwargs, OPEN_CLIP_ARCHITECTURE_KWARGS, "open_clip")
        if config.pretrained and Path(config.pretrained).is_file() and Path(config.pretrained).suffix != ".safetensors":
            raise WeightsError(
                f"vision.pretrained={config.pretrained}: qformer loads open_clip weights from .safetensors files "
                "only (a pickle can run code when loaded); save the state dict with safetensors.torch.save_file"
            )
        try:
            clip = open_clip.create_model(config.model_name, pretrained=config.pretrained, weights_only=True, **kwargs)
        except RuntimeError as e:  # an unknown model name or pretrained tag
            raise ConfigError(f"vision: open_clip cannot build {config.model_name!r}: {e}") from e
        visual = clip.visual
        if not isinstance(visual, VisionTransformer):
            raise ValueError(
                f"vision.model_name={config.model_name!r}: open_clip tower {type(visual).__name__} "
                "has no token output; use a ViT tower, or the timm backend for this architecture"
            )
        visual.output_tokens = True
        self.backbone = visual
        self.width = visual.transformer.width
        cfg = open_clip.get_model_preprocess_cfg(clip)
        size = cfg["size"]
        default = Preprocess(
            size=size if isinstance(size, int) else size[0],
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            interpolation=cfg.get("interpolation", "bicubic"),
            crop_pct=1.0 if cfg.get("resize_mode", "shortest") == "shortest" else None,
        )
        self.preprocessor = merge_preprocess(default, config)
        self.freeze()

    def forward_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        _, tokens = self.backbone(pixels)  # patch tokens after ln_post: (B, N, width)
        return tokens
