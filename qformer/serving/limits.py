"""What one HTTP client may cost a server, enforced before any model sees the request, the same on
Ray Serve (in its HTTP proxy) and BentoML (in its API worker):

- a request head of at most 16 kB: uvicorn's h11 parser stops there, where httptools (uvicorn's
  choice when installed) buffers an unterminated header without end (200 MB took 55 s of a core
  and 275 MB in one test); `prefer_h11()` makes uvicorn choose h11 in this process;
- a body of at most `MAX_BODY_BYTES`, declared or sent, arriving with no pause over `BODY_IDLE_S`
  and whole within `BODY_TOTAL_S`; the body is read here, so a client that stalls holds only a
  coroutine of the proxy, never a model's slot;
- at most `MAX_BUFFERED_BYTES` of bodies held at once across all clients;
- no client-chosen timeout: Ray Serve lets an `x-request-timeout-seconds` header lift its own.

Each refusal is an HTTP status with a JSON sentence, as the endpoints give theirs.
"""

from __future__ import annotations

import asyncio
import json

from .uploads import MAX_UPLOAD_BYTES

# a 20 MB image, its multipart framing and the form's other fields
MAX_BODY_BYTES = MAX_UPLOAD_BYTES + 256 * 1024
BODY_IDLE_S = 10.0
BODY_TOTAL_S = 120.0
MAX_BUFFERED_BYTES = 512 * 2**20
# Ray Serve's per-request timeout header; a client must not set the server's timeouts
CLIENT_TIMEOUT_HEADERS = (b"x-request-timeout-seconds",)


def prefer_h11() -> None:
    """Make uvicorn's "auto" HTTP parser h11 in this process (see the module's note); uvicorn reads
    the choice when a server starts, so this runs before the server does."""
    from uvicorn.protocols.http import auto
    from uvicorn.protocols.http.h11_impl import H11Protocol

    auto.AutoHTTPProtocol = H11Protocol


class RequestLimits:
    """ASGI middleware: the body read whole, within the limits above, before the app runs."""

    def __init__(self, app, max_body: int = MAX_BODY_BYTES, idle_s: float = BODY_IDLE_S,
                 total_s: float = BODY_TOTAL_S, max_buffered: int = MAX_BUFFERED_BYTES):
        self.app, self.max_body, self.idle_s, self.total_s = app, max_body, idle_s, total_s
        self.max_buffered, self.buffered = max_buffered, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() not in CLIENT_TIMEOUT_HEADERS]}
        declared = _content_length(scope["headers"])
        if declared is not None and declared > self.max_body:
            return await _refuse(send, 413,
                                 f"the request body is over {self.max_body // 2**20} MB; send a smaller image")
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        held = 0
        try:
            chunks, refusal = [], None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.total_s
            while True:
                wait = min(self.idle_s, deadline - loop.time())
                try:
                    message = await asyncio.wait_for(receive(), timeout=max(wait, 0.001))
                except asyncio.TimeoutError:
                    refusal = (408, f"the request body did not arrive in time (a pause of over {self.idle_s:g} s, "
                                    f"or over {self.total_s:g} s in all); send it again")
                    break
                if message["type"] == "http.disconnect":
                    return  # the client left: nothing to answer
                body = message.get("body", b"")
                if held + len(body) > self.max_body:
                    refusal = (413, f"the request body is over {self.max_body // 2**20} MB; send a smaller image")
                    break
                if self.buffered + len(body) > self.max_buffered:
                    refusal = (503, "the server is holding too many uploads at once; try again in a moment")
                    break
                held += len(body)
                self.buffered += len(body)
                chunks.append(body)
                if not message.get("more_body", False):
                    break
            if refusal is not None:
                return await _refuse(send, *refusal)
            await self.app(scope, _replay(b"".join(chunks), receive), send)
        finally:
            self.buffered -= held


def _content_length(headers) -> int | None:
    for key, value in headers:
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive):
    """The body as one message, then whatever the server says next (a disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(send, status: int, sentence: str) -> None:
    body = json.dumps({"detail": sentence}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def ray_proxy_middlewares() -> list:
    """Ray Serve's hook for its HTTP proxies (`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`, which
    `qformer serve` sets; set it on a cluster's nodes too): h11, then `RequestLimits` on every request."""
    from starlette.middleware import Middleware

    prefer_h11()
    return [Middleware(RequestLimits)]
