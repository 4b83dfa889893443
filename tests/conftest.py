"""Shared fixtures: tiny random models (no files needed) and real photos bundled with scikit-image."""

from __future__ import annotations

import os

# Tests never reach for the network: a hub lookup fails at once instead of timing out.
# Set before anything imports huggingface_hub, which reads it once.
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

import qformer  # noqa: E402


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



def losses_for(model: qformer.Blip2, pixels, texts: list[str], stage: int = 2, prompts: list[str] | None = None,
               **extra) -> dict:
    """A training step's losses through the public path: the processor makes the tensors, the model takes them."""
    if stage == 1:
        ids, mask = model.processor.qformer_text(texts)
        return model(pixel_values=pixels, qformer_input_ids=ids, qformer_attention_mask=mask, stage=1, **extra)
    prompts = prompts if prompts is not None else [model.config.lm.prompt] * len(texts)
    return model(pixel_values=pixels, **model.processor.lm_training(prompts, texts), stage=stage, **extra)
