"""What every server checks in a request before a model sees it, the same for Ray Serve and BentoML:
an image upload's size and content, a question, a list of texts. Each refusal is an `UploadError`
with the HTTP status to answer and a sentence saying what to send instead.

Decoding is where one small request can cost the most: a 86 kB PNG may hold 88 megapixels, 350 MB
once decoded. So uploads decode at the size the models work at (`SERVED_MAX_SIDE`; a JPEG decodes
at that scale in the first place), and a server decodes at most `MAX_PIXELS_IN_FLIGHT` at once:
the rest wait their turn, and a request that waits too long is told to come back.
"""

from __future__ import annotations

import asyncio

from ..processing.images import MAX_IMAGE_PIXELS, MAX_UPLOAD_BYTES, ImageLoadError, image_size, load_image
from ..processing.prompts import MAX_QUESTION_CHARS, check_question

# The models look at 224 to 416 pixels; a crop of a small animal keeps detail at 2048.
SERVED_MAX_SIDE = 2048
MAX_PIXELS_IN_FLIGHT = MAX_IMAGE_PIXELS + 8 * 2**20  # one photo at the pixel limit, or many small ones
BUDGET_WAIT_S = 60.0
MAX_TEXTS, MAX_TEXT_CHARS = 64, 1000


class UploadError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class PixelBudget:
    """Megapixels being decoded in this process, held while they are: `async with budget(pixels)`."""

    def __init__(self, limit: int = MAX_PIXELS_IN_FLIGHT, wait_s: float = BUDGET_WAIT_S):
        self.limit, self.wait_s, self.used = limit, wait_s, 0
        self._changed: asyncio.Condition | None = None

    def __call__(self, pixels: int) -> _Held:
        return _Held(self, min(pixels, self.limit))


class _Held:
    def __init__(self, budget: PixelBudget, pixels: int):
        self.budget, self.pixels = budget, pixels

    async def __aenter__(self):
        budget = self.budget
        budget._changed = budget._changed or asyncio.Condition()
        async with budget._changed:
            try:
                await asyncio.wait_for(budget._changed.wait_for(lambda: budget.used + self.pixels <= budget.limit),
                                       budget.wait_s)
            except asyncio.TimeoutError:
                raise UploadError(503, "the server is decoding too many large images at once; try again in a "
                                       "moment") from None
            budget.used += self.pixels

    async def __aexit__(self, *exc):
        async with self.budget._changed:
            self.budget.used -= self.pixels
            self.budget._changed.notify_all()


_budget = PixelBudget()


async def decoded_upload(data: bytes, budget: PixelBudget = _budget):
    """The upload as an RGB image of at most `SERVED_MAX_SIDE` a side, decoded in a thread within the
    process's pixel budget; `data` may be one byte over the limit, to tell "too big" apart."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(413, f"the upload is over {MAX_UPLOAD_BYTES // 2**20} MB; send a smaller image")
    try:
        width, height = image_size(data)
        async with budget(width * height):
            return await asyncio.to_thread(load_image, data, max_side=SERVED_MAX_SIDE)
    except ImageLoadError as e:
        raise UploadError(400, f"could not read the upload: {e.reason}") from None


def checked_question(question: str) -> str:
    try:
        return check_question(question)
    except ValueError as e:
        raise UploadError(422, str(e)) from None


def checked_texts(texts: list[str]) -> list[str]:
    if not 1 <= len(texts) <= MAX_TEXTS or any(not t.strip() or len(t) > MAX_TEXT_CHARS for t in texts):
        raise UploadError(422, f"send 1 to {MAX_TEXTS} texts (form field 'texts', repeated), each of 1 to "
                               f"{MAX_TEXT_CHARS} characters")
    return texts


__all__ = ["MAX_QUESTION_CHARS", "MAX_UPLOAD_BYTES", "PixelBudget", "UploadError", "checked_question", "checked_texts",
           "decoded_upload"]
