"""What a folder's own files may point at: a saved bridge's `config.json`, an export's `onnx.json`,
an engine's `engine.json`. They may come from someone else, so a folder is closed: every path they
name is `./name` and stays inside the folder once symbolic links are followed; anything else must be
a hub id, a `pypi:` package or a built-in name. Absolute paths, `~`, `..`, and names that happen to
be a folder where the program runs are refused, each by name, with what to do instead.
"""

from __future__ import annotations

import re
from pathlib import Path

from .typed import ConfigError

# owner/name or a bare name (hub ids, open_clip tags, timm and transformers model names), with
# timm's and open_clip's own hub prefix; never `local-dir:` or `file:`, which read local folders
_HUB_ID = re.compile(r"(hf[-_]hub:)?[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_PACKAGE = re.compile(r"pypi:[A-Za-z_][\w.]*")
BUILTIN_NAMES = frozenset({"byt5", "hub"})  # the byte tokenizer; timm's own download


class OutsideFolderError(ConfigError):
    """A path in a folder's own file that leads outside the folder."""


def inside(folder: str | Path, name: str | Path, where: str) -> Path:
    """`folder / name` with symbolic links followed, refused unless it stays in `folder`."""
    root = Path(folder).resolve()
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise OutsideFolderError(f"{where}: {str(name)!r} leads out of {folder}; a folder names only its own files")
    path = (root / name).resolve()
    if path != root and root not in path.parents:  # a symbolic link that points elsewhere
        raise OutsideFolderError(f"{where}: {str(name)!r} is a link out of {folder}; copy the file into the folder "
                                 "itself")
    return path


def named_in_folder(value: str | None, folder: str | Path, where: str, may_be_local: bool = True) -> str | None:
    """A value from a folder's own file, as the loaders should read it: `./name` made an absolute path
    inside the folder; a hub id, a `pypi:` package or a built-in name as it is; anything else refused.
    `may_be_local`: the loader reads a local path of that name before the hub (a tokenizer, weights)."""
    if value is None or value == "" or value in BUILTIN_NAMES or _PACKAGE.fullmatch(value):
        return value
    if value.startswith("./"):
        return str(inside(folder, value[2:] or ".", where))
    if value.startswith(("/", "~")) or ".." in Path(value).parts or not _HUB_ID.fullmatch(value):
        raise OutsideFolderError(f"{where}={value!r} in {folder} is neither inside the folder (./name) nor a hub id; "
                                 "a saved folder names its own files as ./name. To use files elsewhere, pass the path "
                                 "yourself as an override")
    if may_be_local and Path(value).exists():  # the loaders would read the local folder of that name, not the hub's
        raise OutsideFolderError(f"{where}={value!r} in {folder} names a hub id, but a file or folder of that name "
                                 "is where this program runs; run it elsewhere, or pass the path yourself as an "
                                 "override")
    return value


def file_name_only(value: str | None, folder: str | Path, where: str) -> str | None:
    """A bare file name (`lm.gguf_file`), never a path."""
    if value is not None and (Path(value).name != value or value in ("", ".", "..")):
        raise OutsideFolderError(f"{where}={value!r} in {folder} must be a file name inside lm.name_or_path, not a path")
    return value
