"""transformers vision models: CLIP, SigLIP, DINOv2 and BLIP-2's own ViT."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

from ...config import ConfigError, VisionConfig
from ...pretrained.frozen import check_parameter_count
from ...pretrained.weights import load_safetensors_model
from .base import CLIP_MEAN, CLIP_STD, FrozenImageEncoder, Preprocess, allowed_kwargs, merge_preprocess

SUPPORTED = ("CLIPVisionModel", "SiglipVisionModel", "Dinov2Model", "Blip2VisionModel")


class HFVisionEncoder(FrozenImageEncoder):
    """`model_name` is the transformers class; `pretrained` a hub id or folder (safetensors weights),
    else random init. `model_kwargs` set fields of the class's config, and nothing else."""

    def __init__(self, config: VisionConfig):
        super().__init__(config.dtype)
        if config.model_name not in SUPPORTED:
            raise ConfigError(f"vision.model_name={config.model_name!r}: the transformers backend supports {SUPPORTED}")
        model_cls = getattr(transformers, config.model_name)
        fields = frozenset(k for k in model_cls.config_class().to_dict() if not k.startswith("_")) - {
            "architectures", "transformers_version", "auto_map", "dtype", "torch_dtype"}
        kwargs = allowed_kwargs(config.model_kwargs, fields, f"transformers {config.model_name}")
        if kwargs:  # sizes from a config: counted before anything is allocated
            check_parameter_count(lambda: model_cls(model_cls.config_class(**kwargs)), "vision.model_kwargs")
        if config.pretrained:
            self.backbone = load_safetensors_model(model_cls, config.pretrained, "vision.pretrained", **kwargs)
        else:
            self.backbone = model_cls(model_cls.config_class(**kwargs))
        vision_config = self.backbone.config
        self.width = vision_config.hidden_size
        default = _processor_preprocess(config.pretrained) or Preprocess(
            size=vision_config.image_size, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic", resize_with="tensor"
        )
        self.preprocessor = merge_preprocess(default, config)
        self.freeze()

    def forward_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values=pixels).last_hidden_state  # (B, N, width)


def _processor_preprocess(pretrained: str | None) -> Preprocess | None:
    """Read the checkpoint's own image-processor settings when it ships them."""
    if not pretrained:
        return None
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(pretrained)
    except (OSError, ValueError):
        if Path(pretrained).is_dir():
            return None  # a local folder without preprocessor_config.json: fall back to defaults
        raise
    crops = getattr(processor, "do_center_crop", False)
    size = processor.crop_size if crops else processor.size
    edge = size.get("height") or size.get("shortest_edge")
    return Preprocess(
        size=edge,
        mean=tuple(processor.image_mean),
        std=tuple(processor.image_std),
        interpolation="bicubic" if int(getattr(processor, "resample", 3)) == 3 else "bilinear",
        # CLIP-style processors resize the short side and crop; BLIP-2's squashes to a square
        crop_pct=edge / processor.size.get("shortest_edge", edge) if crops else None,
        resize_with="tensor",
    )
