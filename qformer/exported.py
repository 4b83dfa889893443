"""An exported folder (`qformer export --onnx`), read without torch: its manifest `onnx.json`, the
visual graph that turns pixels into the language model's soft prompt, and the preprocessing the
graph's pixels need. The manifest may come from someone else: every value in it is checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .extras import require
from .files import sha256_of
from .onnx_runtime import open_session
from .preprocess import PIL_FILTERS, Preprocess

VISUAL_GRAPH = "visual_prompt.onnx"
MANIFEST = "onnx.json"
LM_FOLDER = "language_model"
MAX_IMAGE_SIZE = 4096  # pixels a side: an encoder's input, not a photo's


def is_exported(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable export manifest ({e}); export the model again") from e
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: not an export manifest (a JSON object); export the model again")
    return manifest


def exported_preprocess(folder: str | Path) -> Preprocess:
    """The image preprocessing recorded at export, checked."""
    entry = read_manifest(folder).get("preprocess")
    where = Path(folder) / MANIFEST
    if not isinstance(entry, dict):
        raise ValueError(f"{where} records no image preprocessing (an export from an older qformer); export the "
                         "model again, or load it with qformer.create_model")
    try:
        size, mean, std = int(entry["size"]), tuple(map(float, entry["mean"])), tuple(map(float, entry["std"]))
        crop = entry.get("crop_pct")
        preprocess = Preprocess(size=size, mean=mean, std=std, interpolation=str(entry["interpolation"]),
                                crop_pct=None if crop is None else float(crop), resize_with=str(entry["resize_with"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: its preprocessing entry is not readable ({e}); export the model again") from e
    if not (0 < size <= MAX_IMAGE_SIZE and len(mean) == len(std) == 3 and all(np.isfinite(mean))
            and all(s > 0 and np.isfinite(s) for s in std) and preprocess.interpolation in PIL_FILTERS
            and preprocess.resize_with in ("pil", "tensor") and (crop is None or 0.1 <= preprocess.crop_pct <= 2)):
        raise ValueError(f"{where}: its preprocessing entry holds values no encoder uses ({entry}); export again")
    return preprocess


class OnnxVisualPrompt:
    """The exported visual graph on onnxruntime: `graph(pixels (B, 3, H, W))` -> `(B, Q, D_lm)`, numpy
    float32 in and out."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        require("onnxruntime", "running an exported bridge")
        folder = Path(folder)
        entry = read_manifest(folder).get("visual_prompt") or {}
        if entry.get("file") != VISUAL_GRAPH:
            raise ValueError(f"{folder / MANIFEST}: the visual graph must be {VISUAL_GRAPH}, not {entry.get('file')!r}")
        if sha256_of(folder / VISUAL_GRAPH) != entry.get("sha256"):
            raise ValueError(f"{folder / VISUAL_GRAPH}: its SHA-256 does not match {MANIFEST}; the file is damaged "
                             "or was changed. Export again with `qformer export --onnx`")
        # run once per batch, right before the language model's prompt pass: no spinning threads left behind
        self.session = open_session(folder / VISUAL_GRAPH, threads, spin=False)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"pixel_values": np.asarray(pixels, dtype=np.float32)})[0]
