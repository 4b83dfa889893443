"""Two or more frozen encoders whose token sets are projected to one width and concatenated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image
from torch import nn

from .base import FrozenImageEncoder, Pixels, Preprocess


@dataclass(frozen=True)
class FusedPreprocess:
    """Each member's own preprocessing of the same images; plain data, so it pickles."""

    members: tuple[Preprocess, ...]

    def __call__(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, ...]:
        return tuple(p(images) for p in self.members)


class FusedEncoder(nn.Module):
    """Frozen members, trainable projections (they belong to the bridge and are saved with it)."""

    def __init__(self, members: Sequence[FrozenImageEncoder], width: int):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.projections = nn.ModuleList(nn.Linear(m.width, width) for m in members)
        self.width = width
        self.preprocessor = FusedPreprocess(tuple(m.preprocessor for m in members))

    def preprocess(self, images: Sequence[Image.Image]) -> Pixels:
        return self.preprocessor(images)

    def forward(self, pixels: Pixels) -> torch.Tensor:
        if not isinstance(pixels, tuple) or len(pixels) != len(self.members):
            raise ValueError(f"a fused encoder needs a tuple of {len(self.members)} pixel batches")
        tokens = [proj(m(x)) for m, proj, x in zip(self.members, self.projections, pixels)]
        return torch.cat(tokens, dim=1)  # (B, N_1 + N_2 + ..., width)
