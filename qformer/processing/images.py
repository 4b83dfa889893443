"""Turning whatever a user passes as an image into an upright 8-bit RGB `PIL.Image`.

Every failure is an `ImageLoadError` that names the input, so one bad file in a batch can be
reported (or skipped) without losing the others.
"""

from __future__ import annotations

import io
import mimetypes
import os
import warnings
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]

# Pillow warns at MAX_IMAGE_PIXELS and raises at twice that; we refuse at the limit itself.
MAX_IMAGE_PIXELS = 89_478_485
# An upload's bytes, for every server and the demo: a 4000x3000 JPEG is 3 to 8 MB.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# What a network is fed is bounded as well as what is decoded: a 692-byte 20000x10 PNG is a small image,
# but scaled to a 224-pixel short side it is 448000 pixels long. Networks see at most this aspect ratio.
MAX_ASPECT = 4.0
# Downscaling for a detector or classifier goes in PIL's two steps: a whole-number box reduction, then
# the filter over the last factor of at least this much. From a 1920-pixel frame to a network's 416 or
# 512 it is a third of the work of filtering the whole way; networks see no difference.
REDUCING_GAP = 1.5
# Pillow's own opener, kept at import: ultralytics (MegaDetector) replaces Image.open process-wide with
# one that tries to pip-install a HEIF plugin at the first unreadable file, which fails offline
_pillow_open = Image.open


class ImageLoadError(ValueError):
    """An input that could not be turned into an image, with the reason and what to do."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


def describe(image: ImageInput) -> str:
    """A short name for an input, for messages and result records."""
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    if isinstance(image, Image.Image):
        return f"<PIL image {image.mode} {image.size[0]}x{image.size[1]}>"
    if isinstance(image, np.ndarray):
        return f"<array {tuple(image.shape)} {image.dtype}>"
    if isinstance(image, bytes):
        return f"<{len(image)} bytes>"
    return f"<{type(image).__name__}>"


def load_image(image: ImageInput, max_pixels: int = MAX_IMAGE_PIXELS, max_side: int | None = None) -> Image.Image:
    """Decode, EXIF-rotate and convert one input to RGB. Raises `ImageLoadError` naming the input.

    `max_side` bounds the result's longer side: a JPEG then decodes at 1/2, 1/4 or 1/8 scale in the
    first place (PIL's draft mode), so a 24-megapixel photo costs what a 1.5-megapixel one does, and
    anything still larger is shrunk before it is converted to RGB."""
    name = describe(image)
    if isinstance(image, np.ndarray):
        return _shrunk(_to_rgb(_from_array(image, name), name), max_side)
    if isinstance(image, Image.Image):
        _check_size(image, name, max_pixels)
        return _to_rgb(_shrunk(ImageOps.exif_transpose(image), max_side), name)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ImageLoadError(name, "no such file" if not path.exists() else "not a file")
        source: io.BytesIO | Path = path
    elif isinstance(image, bytes):
        source = io.BytesIO(image)
    else:
        raise ImageLoadError(name, "expected a path, bytes, a PIL image or a numpy array")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _pillow_open(source) as opened:
                _check_size(opened, name, max_pixels)
                if max_side and max(opened.size) > max_side:
                    opened.draft(None, _scaled(opened.size, max_side))  # JPEG only; a no-op for other formats
                opened.load()  # decode now, so a truncated file fails here and not later
                # shrunk before it is turned upright, so no full-size copy is made; the EXIF goes along
                upright = _shrunk(opened, max_side)
                ImageOps.exif_transpose(upright, in_place=True)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(name, f"too large to decode safely ({e})") from e
    except UnidentifiedImageError as e:
        raise ImageLoadError(name, "not an image file Pillow can read") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(name, f"corrupt or truncated image ({e})") from e
    return _to_rgb(upright, name)


def image_size(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(width, height) from an image file's header, without decoding it; `ImageLoadError` when the
    bytes are not an image Pillow reads or hold more than `max_pixels`."""
    name = describe(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _pillow_open(io.BytesIO(data)) as opened:
                _check_size(opened, name, max_pixels)
                return opened.size
    except ImageLoadError:
        raise
    except UnidentifiedImageError as e:
        raise ImageLoadError(name, "not an image file Pillow can read") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(name, f"corrupt or truncated image ({e})") from e


def reduced(image: Image.Image, short_side: int | None) -> Image.Image:
    """`image` box-reduced by the largest whole factor that keeps its shorter side at least `short_side`
    pixels, or `image` itself. The cheap first step of every downscale, done once for all the networks
    that look at the whole photo instead of once by each (from 1728x1080 to NanoDet's 416x416, Pillow
    alone reduces by 2x1 and filters the rest: 13 ms, against 6 ms from a reduction by 2)."""
    factor = min(image.size) // short_side if short_side else 1
    return image.reduce(factor) if factor >= 2 and not image.mode.startswith("I;16") else image


def _scaled(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    scale = max_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _shrunk(image: Image.Image, max_side: int | None) -> Image.Image:
    """`image` with its longer side at most `max_side`: a whole-number reduction first (cheap, and in the
    image's own mode, so a bilevel scan is not made RGB at full size), then resampling."""
    if not max_side or max(image.size) <= max_side:
        return image
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    factor = max(image.size) // max_side
    if factor >= 2 and not image.mode.startswith("I;16"):  # Pillow reduces every other mode
        image = image.reduce(factor)
    if max(image.size) > max_side:
        image = image.resize(_scaled(image.size, max_side), Image.Resampling.BICUBIC)
    return image


def load_images(images: Sequence[ImageInput], return_exceptions: bool = False, workers: int = 1,
                max_side: int | None = None) -> tuple[list[Image.Image], list[ImageLoadError | None]]:
    """The readable images, decoded (by `workers` threads: decoding releases the GIL; at most `max_side`
    pixels a side, as `load_image`), and per input either None or the error that stopped it; without
    `return_exceptions`, the first error is raised."""
    def attempt(image: ImageInput) -> Image.Image | ImageLoadError:
        try:
            return load_image(image, max_side=max_side)
        except ImageLoadError as e:
            if not return_exceptions:
                raise
            return e

    if workers > 1 and len(images) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(workers, len(images))) as pool:
            decoded = list(pool.map(attempt, images))
    else:
        decoded = [attempt(image) for image in images]
    errors = [d if isinstance(d, ImageLoadError) else None for d in decoded]
    return [d for d in decoded if not isinstance(d, ImageLoadError)], errors


def crop_to_aspect(image: Image.Image, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """The centre of an image more than `max_aspect` times as long as it is wide (or tall), cut to that
    ratio. For preprocessing that centre-crops anyway this changes nothing the network sees."""
    width, height = image.size
    if max(width, height) <= max_aspect * min(width, height):
        return image
    if width > height:
        keep = max(1, int(height * max_aspect))
        left = (width - keep) // 2
        return image.crop((left, 0, left + keep, height))
    keep = max(1, int(width * max_aspect))
    top = (height - keep) // 2
    return image.crop((0, top, width, top + keep))


def network_size(width: int, height: int, short_side: int, max_aspect: float = MAX_ASPECT) -> tuple[int, int]:
    """(width, height) with the short side at `short_side` and the long side at most `max_aspect` times
    that: extreme shapes are squashed, so fractions of the result are fractions of the image."""
    scale = short_side / min(width, height)
    longest = int(short_side * max_aspect)
    return (min(longest, max(short_side, round(width * scale))), min(longest, max(short_side, round(height * scale))))



def letterbox(image: Image.Image, size: int, fill: tuple[int, int, int] = (124, 116, 104)) -> Image.Image:
    """`image` scaled so its long side is `size`, centred on a `size` x `size` canvas of `fill` (ImageNet's
    mean colour by default). A classifier then sees the whole object, where a centre crop of a long
    crop would cut off its head or tail. Memory is bounded by `size`, whatever the input's shape."""
    width, height = image.size
    scale = size / max(width, height)
    scaled = image.convert("RGB").resize((max(1, round(width * scale)), max(1, round(height * scale))),
                                         Image.Resampling.BICUBIC, reducing_gap=3.0)
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(scaled, ((size - scaled.width) // 2, (size - scaled.height) // 2))
    return canvas

def _check_size(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise ImageLoadError(
            name, f"{width}x{height} pixels is over the limit of {max_pixels}; downscale it first"
        )
    if width == 0 or height == 0:
        raise ImageLoadError(name, f"empty image ({width}x{height})")


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageLoadError(name, "an array image must be HxW, HxWx3 or HxWx4 (or CHW)")
    if np.issubdtype(array.dtype, np.floating):
        array = np.clip(array, 0.0, 1.0) * 255.0
    elif array.dtype == np.uint16:
        array = array / 257.0
    elif array.dtype != np.uint8:
        raise ImageLoadError(name, f"unsupported array dtype {array.dtype}; use uint8, uint16 or float in [0, 1]")
    return Image.fromarray(np.round(array).astype(np.uint8))


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit / 32-bit integer grayscale: Pillow's convert("RGB") would clip, not rescale.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return _from_array(array / top, name).convert("RGB")
    if image.mode == "F":
        return _from_array(np.asarray(image, dtype=np.float64), name).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels carry arbitrary colours; show them on white, as a viewer would.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def image_suffixes() -> set[str]:
    """The file extensions Pillow can open here (with its plugins, e.g. pillow-heif for .heic)."""
    Image.init()
    return {suffix.lower() for suffix in Image.registered_extensions()}


def find_images(targets: Sequence[str | Path]) -> tuple[list[str], list[str]]:
    """(images, skipped): files named directly and image files under folders (recursively), sorted,
    each once however often it is named (`dir dir/a.jpg` is one run over dir); and the photos in those
    folders that no installed decoder reads (a phone's .heic without pillow-heif, a camera's raw files),
    so they can be reported rather than silently left out."""
    suffixes = image_suffixes()
    found, skipped, seen = [], [], set()

    def add(path: Path, into: list[str]) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            into.append(str(path))

    for name in targets:
        if isinstance(name, str) and name.lower().startswith(("http://", "https://", "ftp://", "s3://", "gs://")):
            raise ValueError(f"{name}: a URL; images are read from files only, so download it and pass its path")
    for target in map(Path, targets):
        if target.is_dir():
            for path in sorted(target.rglob("*")):
                if not path.is_file() or path.name.startswith("."):
                    continue
                if path.suffix.lower() in suffixes:
                    add(path, found)
                elif (mimetypes.guess_type(path.name)[0] or "").startswith("image/"):
                    add(path, skipped)
        elif target.exists():
            add(target, found)
        else:
            raise FileNotFoundError(f"{target}: no such file or folder")
    return found, skipped
