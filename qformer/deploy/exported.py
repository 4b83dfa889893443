"""An exported folder (`qformer export --onnx`), read without torch: its manifest `onnx.json`, the
visual graph that turns pixels into the language model's soft prompt, and the preprocessing the
graph's pixels need. The manifest may come from someone else: every value in it is checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..extras import require
from ..files import OutsideFolderError, inside, native_errors, sha256_of
from ..processing.preprocess import PIL_FILTERS, Preprocess
from .runtime import open_session

VISUAL_GRAPH = "visual_prompt.onnx"
MANIFEST = "onnx.json"
LM_FOLDER = "language_model"
MAX_IMAGE_SIZE = 4096  # pixels a side: an encoder's input, and what an image is resized to before the crop
CAPTIONERS = ("bridge", "default")  # what an exported folder answers as: its bridge alone, or the routed default
# the files besides the graphs that the runtime reads, hashed in the manifest
HASHED = ("config.json", f"{LM_FOLDER}/engine.json", f"{LM_FOLDER}/tokenizer/tokenizer.json",
          f"{LM_FOLDER}/tokenizer/tokenizer_config.json")


def is_exported(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of the files in `HASHED` that the folder holds, for its manifest."""
    return {name: sha256_of(folder / name) for name in HASHED if (folder / name).is_file()}


def verify_files(folder: str | Path) -> None:
    """Every file the manifest hashes is inside the folder and unchanged; else a sentence naming it."""
    folder = Path(folder)
    hashes = read_manifest(folder).get("files")
    if not isinstance(hashes, dict) or "config.json" not in hashes:
        raise ValueError(f"{folder / MANIFEST} records no hashes of its files (an export from an older qformer); "
                         "export the model again")
    for name, expected in hashes.items():
        if name not in HASHED:
            raise ValueError(f"{folder / MANIFEST} lists {name!r}, which no export writes; export the model again")
        try:
            path = inside(folder, name, str(folder / MANIFEST))
        except OutsideFolderError as e:
            raise ValueError(str(e)) from None
        if not path.is_file() or sha256_of(path) != expected:
            raise ValueError(f"{folder / name}: missing, or its SHA-256 does not match {MANIFEST}; the file is damaged "
                             "or was changed. It is left as it is: export the model again")


def exported_from(folder: str | Path) -> str:
    """"default" for a folder exported from the routed default, else "bridge" (exports before the
    manifest said, and any value this version does not know, are the bridge alone)."""
    captioner = read_manifest(folder).get("captioner")
    return captioner if captioner in CAPTIONERS else "bridge"


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
    resized = size if crop is None else size / preprocess.crop_pct if preprocess.crop_pct > 0 else float("inf")
    if not (0 < size <= MAX_IMAGE_SIZE and resized <= MAX_IMAGE_SIZE and len(mean) == len(std) == 3
            and all(np.isfinite(mean)) and all(s > 0 and np.isfinite(s) for s in std)
            and preprocess.interpolation in PIL_FILTERS and preprocess.resize_with in ("pil", "tensor")
            and (crop is None or 0.1 <= preprocess.crop_pct <= 2)):
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
        graph = inside(folder, VISUAL_GRAPH, str(folder / MANIFEST))
        if sha256_of(graph) != entry.get("sha256"):
            raise ValueError(f"{folder / VISUAL_GRAPH}: its SHA-256 does not match {MANIFEST}; the file is damaged "
                             "or was changed. Export again with `qformer export --onnx`")
        # run once per batch, right before the language model's prompt pass: no spinning threads left behind
        self.graph = graph
        self.session = open_session(graph, threads, spin=False)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        with native_errors(self.graph, "running the visual graph", "export the model again"):
            return self.session.run(None, {"pixel_values": np.asarray(pixels, dtype=np.float32)})[0]
