"""Reject bodies over the size limit before anything reads them."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.asgi import HttpMiddleware
from app.errors import app_error_response
from models.errors import PayloadTooLargeError

TOO_LARGE = "request body is over the limit"


def declared_length(scope: Scope) -> int | None:
    """Return the request's Content-Length; None when it declares none; -1 when it is not
    a number."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
    return None


def declared_too_big(scope: Scope, max_bytes: int) -> bool:
    """Return True when the request's Content-Length is over max_bytes (or unreadable)."""
    length = declared_length(scope)
    return length is not None and (length < 0 or length > max_bytes)


async def read_body(receive: Receive, max_bytes: int) -> bytes | None:
    """Return the whole request body, None if the client went away first; raise
    PayloadTooLargeError as soon as more than max_bytes have arrived."""
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > max_bytes:
            raise PayloadTooLargeError(TOO_LARGE)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class BodyLimitMiddleware(HttpMiddleware):
    """413 for any request whose body exceeds max_bytes (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if declared_too_big(scope, self.max_bytes):
            await _reject(scope, receive, send)
            return
        seen = 0
        started = [False]

        async def _receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started[0] = True
            await send(message)

        try:
            await self.app(scope, _receive, _send)
        except _TooLarge:
            if not started[0]:
                await _reject(scope, receive, send)


class _TooLarge(Exception):
    pass


async def _reject(scope: Scope, receive: Receive, send: Send) -> None:
    await app_error_response(PayloadTooLargeError(TOO_LARGE))(scope, receive, send)
