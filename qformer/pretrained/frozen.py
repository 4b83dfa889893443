"""The frozen contract, in one place: a pretrained module whose parameters never require grad and
whose eval mode survives its parent's `.train()` (no dropout, no batch-norm updates)."""

from __future__ import annotations

from typing import Callable

from torch import nn


class Frozen(nn.Module):
    def freeze(self) -> Frozen:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> Frozen:
        return super().train(False)


# A backbone whose architecture a config sets (random weights, or sizes in model_kwargs) is counted
# before it is built: a config from someone else could ask for a trillion parameters.
MAX_BUILT_PARAMETERS = 2_000_000_000  # 8 GB in float32


def check_parameter_count(build: Callable[[], nn.Module], where: str) -> None:
    """Build the module on torch's meta device (no memory), and refuse it when it is too large."""
    import torch

    from ..config.typed import ConfigError

    try:
        with torch.device("meta"):
            count = sum(p.numel() for p in build().parameters())
    except (RuntimeError, TypeError, ValueError, NotImplementedError):
        return  # it does not build this way: the real build says what is wrong
    if count > MAX_BUILT_PARAMETERS:
        raise ConfigError(f"{where} asks for a model of {count:,} parameters, over the {MAX_BUILT_PARAMETERS:,} "
                          "that a config may build; check its sizes")
