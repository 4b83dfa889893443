"""What one decoding step needs from transformers, and what it says back, across its versions; and
where greedy decoding's output ends. No torch here: the torch-free engine shares `generated_length`."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np


def cache_argument(model: Any) -> str:
    """The name under which `model.forward` takes its KV cache: `cache` (transformers 5.25 and later,
    where `past_key_values` is deprecated) or `past_key_values` (before)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def returned_cache(output: Any) -> Any:
    """The KV cache a forward pass returned, under either name."""
    fields = getattr(output, "__dataclass_fields__", {})
    return output.cache if "cache" in fields else output.past_key_values


def generated_length(tokens: np.ndarray, eos_ids: Sequence[int]) -> int:
    """Columns `generate` returns: up to the step where the last row ended, or all of them."""
    ended = np.isin(tokens, list(eos_ids))
    if not len(eos_ids) or not ended.any(axis=1).all():
        return tokens.shape[1]
    return int(ended.argmax(axis=1).max()) + 1
