"""A region's dominant colour, named from a small palette by hue, saturation and value; and whether a
picture is one flat colour."""

from __future__ import annotations

import numpy as np
from PIL import Image

HUES = ((15, "red"), (40, "orange"), (70, "yellow"), (170, "green"), (260, "blue"), (300, "purple"), (345, "pink"),
        (360, "red"))


def colour_names(pixels: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) colour names."""
    rgb = pixels.reshape(-1, 3).astype(np.float32) / 255.0
    high, low = rgb.max(1), rgb.min(1)
    chroma = high - low
    saturation = np.where(high > 0, chroma / np.maximum(high, 1e-6), 0.0)
    r, g, b = rgb.T
    safe = np.maximum(chroma, 1e-6)
    hue = np.select([high == r, high == g], [((g - b) / safe) % 6, (b - r) / safe + 2], (r - g) / safe + 4) * 60
    names = np.empty(len(rgb), dtype=object)
    for limit, name in reversed(HUES):
        names[hue < limit] = name
    brownish = (hue < 45) & (high < 0.6) & (saturation > 0.25)
    names[brownish] = "brown"
    grey = saturation < 0.2
    names[grey] = np.where(high[grey] > 0.8, "white", np.where(high[grey] < 0.25, "black", "grey"))
    names[(high < 0.15)] = "black"
    return names.reshape(pixels.shape[:-1])


def dominant_colour(pixels: np.ndarray) -> str | None:
    if pixels.size == 0:
        return None
    names, counts = np.unique(colour_names(pixels), return_counts=True)
    return str(names[counts.argmax()])


# A blank picture: box-reduced to about PLAIN_SIDE pixels on its longer side, no pixel more than PLAIN_LEVELS
# (of 255) from the median in any channel. A 1920-pixel frame then averages 30x30 blocks, so anything
# of 30x30 pixels or more that stands out clearly breaks the flatness, wherever the blocks cut it.
# Averaging also hides grain, so the centre's PLAIN_SIDE pixels, as they are, must not vary by more
# than PLAIN_LEVELS either: a dark frame's sensor noise is plain, a television's static is not.
PLAIN_SIDE, PLAIN_LEVELS = 64, 24


def plain_colour(image: Image.Image) -> str | None:
    """The colour's name when the picture is one flat colour (a blank frame, an empty canvas, a single
    pixel), else None. There is nothing in such a picture to name, and a captioner trained on drawings
    of shapes invents shapes on it."""
    width, height = image.size
    left, top = max(0, (width - PLAIN_SIDE) // 2), max(0, (height - PLAIN_SIDE) // 2)
    centre = np.asarray(image.crop((left, top, left + min(width, PLAIN_SIDE), top + min(height, PLAIN_SIDE)))
                        .convert("RGB"), dtype=np.float32)
    if centre.reshape(-1, 3).std(axis=0).max() > PLAIN_LEVELS:
        return None
    factor = max(width, height) // PLAIN_SIDE
    small = image.reduce(factor) if factor >= 2 else image  # box averages, without a copy of the photo
    pixels = np.asarray(small.convert("RGB"), dtype=np.int16).reshape(-1, 3)
    median = np.median(pixels, axis=0)
    if np.abs(pixels - median).max() > PLAIN_LEVELS:
        return None
    return str(colour_names(np.round(median).astype(np.uint8)[None])[0])
