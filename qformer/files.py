"""Files on disk, whoever made them:

- writing so that a crash never leaves half of one: write beside it, then rename onto it;
- closed folders: what a folder's own files may point at (a saved bridge's `config.json`, an
  export's `onnx.json`, an engine's `engine.json`). They may come from someone else, so every path
  they name is `./name` and stays inside the folder once symbolic links are followed; anything else
  must be a hub id, a `pypi:` package or a built-in name. Absolute paths, `~`, `..`, and names that
  happen to be a folder where the program runs are refused, each by name, with what to do instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .config.typed import ConfigError


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """`write(staging)` to a sibling of `path` (a file or a folder), then rename it onto `path`, so
    readers see the old version or the new one, never a part. The staging name holds the process id,
    so processes writing the same path at once do not mix their parts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(staging)
        os.replace(staging, path)
    except BaseException:
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.unlink(missing_ok=True)
        raise
    return path


def with_default_mode(path: str | Path) -> Path:
    """Give a file the mode every other file of the process gets (0666 less the umask): safetensors
    writes its files readable by their owner only, and a saved folder is shared or served whole."""
    os.chmod(path, 0o666 & ~_umask())
    return Path(path)


def _umask() -> int:
    try:  # read, not set: os.umask would change it for every thread while it is read
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def write_text_atomically(path: str | Path, text: str) -> Path:
    return write_atomically(path, lambda staging: staging.write_text(text, encoding="utf-8"))


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file, read in chunks: checking a graph of hundreds of MB holds none of it in memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class UnreadableFileError(ValueError):
    """A file a native library could not use (a damaged or hostile tokenizer, graph...), named."""


@contextmanager
def native_errors(path: str | Path, what: str, remedy: str):
    """Errors raised by a native library reading `path` (tokenizers' Rust panics, which Python sees as
    a `BaseException`; onnxruntime's own error types) as one `UnreadableFileError` that names the
    file. An interrupt or an exit passes through."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError, OSError):
        raise
    except BaseException as e:  # noqa: BLE001 -- whatever the library raised, the user gets one sentence
        detail = " ".join(str(e).split())[:200]
        raise UnreadableFileError(f"{path}: {what} failed ({type(e).__name__}: {detail}); {remedy}") from None


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
        raise OutsideFolderError(f"{where}={value!r} in {folder} must be a file name inside "
                                 f"lm.name_or_path, not a path")
    return value


def cache_root() -> Path:
    """`$QFORMER_CACHE`, else `$XDG_CACHE_HOME/qformer`, else `~/.cache/qformer`."""
    if os.environ.get("QFORMER_CACHE"):
        return Path(os.environ["QFORMER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qformer"


def content_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes, computed once per path, size and modification time."""
    stat = path.stat()
    stamp = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    memo = cache_root() / "digests" / stamp
    try:
        digest = memo.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        digest = ""
    if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
        return digest
    digest = sha256_of(path)
    try:
        write_text_atomically(memo, digest)
    except OSError:  # a read-only cache only costs hashing again next time
        pass
    return digest
