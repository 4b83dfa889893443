"""What every server checks in a request before a model sees it, the same for Ray Serve and BentoML:
an image upload's size and content, a question, a list of texts. Each refusal is an `UploadError`
with the HTTP status to answer and a sentence saying what to send instead."""

from __future__ import annotations

from ..images import ImageLoadError, load_image

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_QUESTION_CHARS = 1000
MAX_TEXTS, MAX_TEXT_CHARS = 64, 1000


class UploadError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def image_from_bytes(data: bytes):
    """The decoded RGB image; `data` may be one byte over the limit, to tell "too big" apart."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(413, f"the upload is over {MAX_UPLOAD_BYTES // 2**20} MB; send a smaller image")
    try:
        return load_image(data)
    except ImageLoadError as e:
        raise UploadError(400, f"could not read the upload: {e.reason}") from None


def checked_question(question: str) -> str:
    if not question.strip() or len(question) > MAX_QUESTION_CHARS:
        raise UploadError(422, f"ask a question of 1 to {MAX_QUESTION_CHARS} characters")
    return question


def checked_texts(texts: list[str]) -> list[str]:
    if not 1 <= len(texts) <= MAX_TEXTS or any(not t.strip() or len(t) > MAX_TEXT_CHARS for t in texts):
        raise UploadError(422, f"send 1 to {MAX_TEXTS} texts (form field 'texts', repeated), each of 1 to "
                               f"{MAX_TEXT_CHARS} characters")
    return texts
