"""What every command shares: exit codes, text safe for a terminal, and the device it runs on."""

from __future__ import annotations

import sys
import unicodedata

EXIT_BAD_INPUT = 1  # an input could not be used (the other results are still printed)
EXIT_USAGE = 2  # bad usage: a flag, a value or a combination the command does not take


def printable(text: str) -> str:
    """Text safe for a terminal: control and format characters (NUL, escape sequences, bidi overrides)
    a model or a file name may hold are shown escaped, never sent to the terminal as they are."""
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c)[0] == "C" else c
                   for c in text)


def message(error: BaseException) -> str:
    # KeyError's str() is the repr of its argument; the sentence inside is what the user needs
    return printable(str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error))


def device_named(name: str) -> str | None:
    """The torch device `--device` names, or None after telling the user why it cannot be used.
    Without torch, the CPU is the only device there is."""
    import importlib.util

    if importlib.util.find_spec("torch") is None and name in ("auto", "cpu"):
        return "cpu"
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        print(f"qformer: --device {printable(name)!r} is not a device; use cpu, cuda, cuda:1, mps or auto",
              file=sys.stderr)
        return None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    missing_gpu = device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count()
    if not available.get(device.type, False) or missing_gpu:
        print(f"qformer: --device {name} is not available on this machine; use --device cpu or auto", file=sys.stderr)
        return None
    return name


def refused(error: BaseException, code: int) -> int:
    """Say why, in the error's own sentence (made safe for a terminal), and give the exit code."""
    print(f"qformer: {printable(str(error))}", file=sys.stderr)
    return code


def images_named(targets: list[str]) -> list[str] | int:
    """The image files `targets` name, folders searched, checked before any model loads; or the exit
    code after saying what is wrong: a URL is bad usage (2), a path that does not exist or a folder
    without images an input that cannot be used (1)."""
    from ..processing.images import find_images

    try:
        files, skipped = find_images(targets)
    except FileNotFoundError as e:
        return refused(e, EXIT_BAD_INPUT)
    except ValueError as e:
        return refused(e, EXIT_USAGE)
    if skipped:
        shown = ", ".join(printable(f) for f in skipped[:5]) + (f" and {len(skipped) - 5} more" * (len(skipped) > 5))
        print(f"qformer: skipped {len(skipped)} photo(s) that no installed decoder reads: {shown}", file=sys.stderr)
    if not files:
        print(f"qformer: no images found in {', '.join(map(printable, targets))} (looked for image files "
              "such as .jpg, .png, .webp, .tif)", file=sys.stderr)
        return EXIT_BAD_INPUT
    return files
