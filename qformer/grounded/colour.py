"""A region's dominant colour, named from a small palette by hue, saturation and value."""

from __future__ import annotations

import numpy as np

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
