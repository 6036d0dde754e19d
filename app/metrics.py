"""Prometheus metrics: one registry per app, a cheap ASGI middleware, /metrics text."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
