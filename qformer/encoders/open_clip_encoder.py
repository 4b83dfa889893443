"""open_clip visual towers: the transformer's patch tokens."""

from __future__ import annotations

import open_clip
import torch
from open_clip.transformer import VisionTransformer

from ..config import VisionConfig
from .base import FrozenImageEncoder, Preprocess, merge_preprocess


class OpenClipEncoder(FrozenImageEncoder):
    """`open_clip.create_model(model_name, pretrained)`; only the visual tower is kept."""

    def __init__(self, config: VisionConfig):
        super().__init__(config.dtype)
        clip = open_clip.create_model(config.model_name, pretrained=config.pretrained, **config.model_kwargs)
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
