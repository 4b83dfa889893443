"""Ways to combine the outputs of parallel branches: `Parallel(..., aggregate=mean)` and so on."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any, Callable, Sequence


def _tensors(values: list[Any]) -> bool:
    """Whether every value is a torch tensor (none can be while torch was never imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and all(isinstance(v, torch.Tensor) for v in values)


def mean(values: list[Any]) -> Any:
    """The average of numbers, numpy arrays or same-shaped tensors (e.g. class probabilities)."""
    if _tensors(values):
        import torch

        return torch.stack(values).float().mean(0)
    return sum(values) / len(values)


def vote(values: list[Any]) -> Any:
    """The most common value; a tie goes to the branch listed first."""
    counts = Counter(values)
    best = max(counts.values())
    return next(v for v in values if counts[v] == best)


def weighted(weights: Sequence[float]) -> Callable[[list[Any]], Any]:
    """A weighted mean, one weight per branch, normalised to sum to one."""
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weights must sum to a positive number, got {list(weights)}")

    def combine(values: list[Any]) -> Any:
        if len(values) != len(weights):
            raise ValueError(f"{len(values)} branch outputs for {len(weights)} weights")
        if _tensors(values):
            return sum(w / total * v.float() for w, v in zip(weights, values))
        return sum(w / total * v for w, v in zip(weights, values))

    return combine


def stacking(model: Callable) -> Callable[[list], Any]:
    """A learned combiner: the branch outputs (torch tensors), concatenated, go through `model` (e.g. a
    linear layer)."""

    def combine(values: list) -> Any:
        import torch

        with torch.no_grad():
            return model(torch.cat([v.float().flatten() for v in values]))

    return combine
