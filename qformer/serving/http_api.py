"""The HTTP API every engine serves, written once: Ray Serve's ingress deployment and BentoML's API
service mount this same FastAPI app, and supply the `Backend` that reaches their model workers.

    POST /caption   (multipart: image)              -> {"text", "source", "facts"?}
    POST /ask       (multipart: image, question)    -> {"text", "source", "facts"?}
    POST /scores    (multipart: image, texts...)    -> {"texts", "scores"}: image-text similarity per text
    POST /wildlife  (multipart: image)              -> MegaDetector batch JSON for the image
    POST /ensemble  (multipart: image)              -> the caption ensemble's candidates, ranked (--ensemble)
    GET  /healthz                                   -> {"status": "ok"}

Form fields are text, taken as sent; an image is a file upload, never a URL to fetch. Every
refusal is a status with `{"detail": sentence}`.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations as types
import os
import unicodedata
from typing import Any, Awaitable, Callable, Optional, Protocol

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..processing.images import MAX_UPLOAD_BYTES
from .uploads import UploadError, checked_question, checked_texts, decoded_upload
from .workers import is_refusal

MAX_NAME_CHARS = 255


class Backend(Protocol):
    """What an engine gives the API: its model workers, reached its own way (handles, clients)."""

    async def caption(self, image) -> dict: ...
    async def ask(self, image, question: str) -> dict: ...
    async def scores(self, image, texts: list) -> dict: ...
    async def wildlife(self, image, name: str) -> dict: ...
    async def ensemble(self, image) -> Optional[dict]: ...  # None: this server has no ensemble


def build_api(backend: Callable[[], Backend], metrics: Optional[Callable[[], Awaitable[str]]] = None) -> FastAPI:
    """The app; `backend()` gives the engine's backend at request time (its replica or service)."""
    api = FastAPI(title="qformer", description="Captions, answers and wildlife reports for uploaded images.")

    @api.exception_handler(RequestValidationError)
    async def _unreadable_form(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": form_problem(error.errors())}, status_code=422)

    @api.exception_handler(UploadError)
    async def _refused_upload(request: Request, error: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @api.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    if metrics is not None:
        from fastapi.responses import PlainTextResponse

        @api.get("/metrics", response_class=PlainTextResponse)
        async def prometheus() -> str:
            return await metrics()

    @api.post("/caption")
    async def caption(image: UploadFile = File(...)) -> dict:
        return answer(await backend().caption(await _image(image)))

    @api.post("/ask")
    async def ask(image: UploadFile = File(...), question: str = Form(...)) -> dict:
        question = checked_question(question)
        return answer(await backend().ask(await _image(image), question))

    @api.post("/scores")
    async def scores(image: UploadFile = File(...), texts: list[str] = Form(...)) -> dict:
        texts = checked_texts(texts)
        return answer(await backend().scores(await _image(image), texts))

    @api.post("/wildlife")
    async def wildlife(image: UploadFile = File(...)) -> dict:
        return answer(await backend().wildlife(await _image(image), uploaded_name(image.filename)))

    @api.post("/ensemble")
    async def ensemble(image: UploadFile = File(...)) -> dict:
        ranked = await backend().ensemble(await _image(image))
        if ranked is None:
            raise HTTPException(404, "this server does not serve the caption ensemble; start it with --ensemble")
        return answer(ranked)

    return api


async def _image(upload: UploadFile):
    return await decoded_upload(await upload.read(MAX_UPLOAD_BYTES + 1))


def answer(reply: dict) -> dict:
    """A worker's reply, or its refusal as the HTTP error it stands for."""
    if is_refusal(reply):
        raise HTTPException(reply["status"], reply["error"])
    return reply


def uploaded_name(name: Optional[str]) -> str:
    """The client's file name as results may show it: its last part, printable, not too long."""
    name = os.path.basename((name or "").replace("\\", "/"))
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")[:MAX_NAME_CHARS]
    return name or "upload"


def form_problem(errors: list[dict[str, Any]]) -> str:
    """One sentence for FastAPI's validation errors: which fields are missing or not what they must be."""
    problems = []
    for error in errors:
        field = str(error.get("loc", ("", "?"))[-1])
        if error.get("type") == "missing":
            problems.append(f"the form field {field!r} is missing")
        elif field == "image":
            problems.append("'image' must be a file upload (multipart/form-data); URLs and text are not fetched")
        else:
            problems.append(f"the form field {field!r} is not valid ({error.get('msg', 'unreadable')})")
    fields = "image (a file)" + ", question (text) for /ask, texts (text, repeated) for /scores"
    return "; ".join(dict.fromkeys(problems)) + f". Send multipart/form-data with {fields}"
