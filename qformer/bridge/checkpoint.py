"""Bridge checkpoints: `config.json` + `model.safetensors` holding only the trained weights.

Frozen backbones are named by the config and rebuilt from their own weights, never copied here.
Loading is strict: every missing, unexpected or wrongly shaped tensor is named in the error.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..files import with_default_mode
from ..pretrained.frozen import Frozen

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
# Wrappers that rename parameters: torch.compile's and DistributedDataParallel's.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model it is loaded into."""


def frozen_prefixes(model: nn.Module) -> list[str]:
    return [name + "." for name, m in model.named_modules() if isinstance(m, Frozen)]


def bridge_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything the model owns except the frozen backbones, as contiguous CPU tensors."""
    skip = tuple(frozen_prefixes(model))
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith(skip)}


def save_bridge(model: nn.Module, directory: Path) -> None:
    save_file(bridge_state_dict(model), str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    with_default_mode(directory / WEIGHTS_NAME)


def unwrap_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the prefixes torch.compile and DDP add, so their checkpoints load into a plain model."""
    return {_unwrapped(key): value for key, value in state.items()}


def _unwrapped(key: str) -> str:
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


# tensors whose shapes give away the bridge's sizes: (key, config fields of each dimension)
SIZE_WITNESSES = {
    "qformer.query_tokens": (None, "num_queries", "hidden_size"),
    "qformer.word_embeddings.weight": ("vocab_size", "hidden_size"),
    "qformer.position_embeddings.weight": ("max_position_embeddings", "hidden_size"),
    "qformer.layers.0.query_ffn.fc1.weight": ("intermediate_size", "hidden_size"),
    "heads.text_proj.weight": ("embed_dim", "hidden_size"),
}


def check_sizes_against_weights(qformer_config, path: Path) -> None:
    """Compare the sizes a saved config asks for with the tensors its weights file holds, reading the
    file's header only: a config that claims a larger bridge than its weights is refused before the
    model is built (a config may come from someone else)."""
    try:
        with safe_open(str(path), "pt") as weights:
            shapes = {_unwrapped(key): tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); was it truncated or edited?") from e
    layers = {int(key.split(".")[2]) for key in shapes if key.startswith("qformer.layers.")}
    problems = [] if len(layers) == qformer_config.num_layers else [
        f"num_layers={qformer_config.num_layers} but the weights hold {len(layers)} layers"]
    for key, fields in SIZE_WITNESSES.items():
        expected = tuple(1 if f is None else getattr(qformer_config, f) for f in fields)
        if shapes.get(key) != expected:
            problems.append(f"{key} is {shapes.get(key, 'missing')}, the config's sizes make {expected}")
    if problems:
        raise CheckpointError(f"{path.parent / CONFIG_NAME} does not describe the weights beside it "
                              f"({'; '.join(problems[:4])}); it was changed or belongs to another model")


def read_bridge(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); was it truncated or edited?") from e


def load_bridge_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load strictly: the checkpoint must hold exactly the bridge's tensors, with the same shapes."""
    state = unwrap_keys(state)
    expected = bridge_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shared = sorted(set(state) & set(expected))
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in shared
        if state[k].shape != expected[k].shape
    ]
    # copy_ would silently cast an integer tensor to float (a bias of 1e9), so the kinds must agree
    wrong_dtype = [f"{k}: checkpoint {state[k].dtype} vs model {expected[k].dtype}" for k in shared
                   if state[k].dtype.is_floating_point != expected[k].dtype.is_floating_point
                   or (not expected[k].dtype.is_floating_point and state[k].dtype != expected[k].dtype)]
    non_finite = [k for k in shared if state[k].dtype.is_floating_point and not torch.isfinite(state[k]).all()]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {_short(unexpected)}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} shape mismatch(es): {_short(wrong_shape)}")
    if wrong_dtype:
        problems.append(f"{len(wrong_dtype)} tensor(s) of the wrong type: {_short(wrong_dtype)}")
    if non_finite:
        problems.append(f"{len(non_finite)} tensor(s) holding NaN or infinity (a diverged run, or a damaged "
                        f"file): {_short(non_finite)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit this model ({'; '.join(problems)}). "
            "Was it saved from a model with the same config.json, and saved completely?"
        )
    # Every bridge tensor is accounted for above; the frozen backbones are absent on purpose.
    targets = model.state_dict()
    with torch.no_grad():
        for key, value in state.items():
            targets[key].copy_(value)


def _short(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
