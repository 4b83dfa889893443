"""Shared fixtures: tiny random models (no files needed) and real photos bundled with scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import qformer


@pytest.fixture(scope="session")
def cat() -> Image.Image:
    return Image.fromarray(data.chelsea())


@pytest.fixture(scope="session")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="session")
def coffee() -> Image.Image:
    return Image.fromarray(data.coffee())


@pytest.fixture(scope="session")
def photos(cat, astronaut, coffee) -> list[Image.Image]:
    return [cat, astronaut, coffee]


def build(name: str = "tiny-random", seed: int = 0, **overrides) -> qformer.Blip2:
    torch.manual_seed(seed)
    return qformer.create_model(name, **overrides)


@pytest.fixture
def tiny() -> qformer.Blip2:
    return build().eval()


@pytest.fixture
def tiny_t5() -> qformer.Blip2:
    return build("tiny-random-t5").eval()


def random_photo(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
