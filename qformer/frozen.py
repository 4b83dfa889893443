"""The frozen contract, in one place: a pretrained module whose parameters never require grad and
whose eval mode survives its parent's `.train()` (no dropout, no batch-norm updates)."""

from __future__ import annotations

from torch import nn


class Frozen(nn.Module):
    def freeze(self) -> Frozen:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> Frozen:
        return super().train(False)
