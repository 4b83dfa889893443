"""Writing files so that a crash never leaves half of one: write beside it, then rename onto it."""

from __future__ import annotations

import hashlib
import os
import shutil
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
    with Path(path).open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()
