"""Writing files so that a crash never leaves half of one: write beside it, then rename onto it."""

from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable


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
