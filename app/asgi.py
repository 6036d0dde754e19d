"""The one shape of our pure-ASGI middleware: HTTP requests go to `handle`, anything else
(lifespan, websockets) straight through to the wrapped app."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class HttpMiddleware:
    """Base of a pure-ASGI middleware that only looks at HTTP requests."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer or pass on one HTTP request."""
        await self.app(scope, receive, send)
