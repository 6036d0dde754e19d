"""Prometheus metrics: one registry per app, a cheap ASGI middleware, /metrics text; and
the gate that keeps the operators' pages (/metrics, the OpenAPI docs) to their networks."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.clientaddr import Network, client_address, in_networks, parse_networks
from app.errors import app_error_response
from models.errors import NotFoundError

# FastAPI's own documentation routes and the Prometheus text: they name every route,
# parameter and queue depth, which is for operators, not for the internet (issue 11).
OPS_PATHS = frozenset({"/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json",
                       "/redoc"})


class Metrics:
    """The service's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("mingpian_http_requests_total", "HTTP requests",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram(
            "mingpian_http_request_seconds", "HTTP request latency", ["route"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry)
        self.queue_depth = Gauge("mingpian_queue_depth", "items waiting in the queue",
                                 ["queue"], registry=self.registry)
        self.events = Counter("mingpian_events_total", "domain events", ["kind"],
                              registry=self.registry)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count and time one answered request."""
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)


class MetricsMiddleware:
    """Count and time every request by its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route: Any = scope.get("route")
            self.metrics.observe_request(getattr(route, "path", "unmatched"), status[0],
                                         time.perf_counter() - start)


def ops_networks(spec: str) -> tuple[Network, ...]:
    """Return the networks of settings.ops_networks; "off" (or "") is none at all."""
    return () if spec.strip().lower() in ("", "off") else parse_networks(spec)


class OpsGateMiddleware:
    """Answer OPS_PATHS only to clients inside the ops networks; everyone else gets the
    same 404 as a route that does not exist."""

    def __init__(self, app: ASGIApp, *, networks: tuple[Network, ...],
                 trusted_proxies: tuple[Network, ...]) -> None:
        self.app = app
        self.networks = networks
        self.trusted_proxies = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in OPS_PATHS and not in_networks(
                client_address(scope, self.trusted_proxies), self.networks):
            await app_error_response(NotFoundError("Not Found"))(scope, receive, send)
            return
        await self.app(scope, receive, send)
