"""Prometheus metrics: one registry per app, a cheap ASGI middleware, /metrics text; and
the gate that keeps the operators' pages (/metrics, the OpenAPI docs) to their networks.

Several processes on one machine (`serve --workers N`, and `mingpian worker` next to it)
share one directory, ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode):
each process writes its values there and /metrics sums every process's, so counters are
whole numbers whichever process answers the scrape. One `serve` process alone keeps its
values in memory, as before.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.asgi import HttpMiddleware
from app.clientaddr import Network, client_address, in_networks, parse_networks
from app.errors import app_error_response
from models.errors import NotFoundError
from store.consumer import ConsumerStats

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir(data_dir: Path) -> Path:
    """Return the metrics directory that processes sharing data_dir on one machine use."""
    return data_dir / "prometheus"


def use_multiprocess_dir(path: Path, *, clean: bool) -> Path:
    """Make this process (and the processes it starts) record metrics under path; with
    clean, first delete what earlier runs left there. Call it before any metric is made."""
    path.mkdir(parents=True, exist_ok=True)
    if clean:
        for f in path.glob("*.db"):  # only prometheus_client's files, whatever path is
            f.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    from prometheus_client import values

    # prometheus_client chose its value class on import: choose again, with the directory.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return path


def _active_multiprocess_dir() -> str | None:
    from prometheus_client import values

    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())

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
        # Set by whichever process answers the scrape: the most recent value is the answer.
        self.queue_depth = Gauge("mingpian_queue_depth", "items waiting in the queue",
                                 ["queue"], registry=self.registry,
                                 multiprocess_mode="mostrecent")
        self.events = Counter("mingpian_events_total", "domain events", ["kind"],
                              registry=self.registry)
        self.processed = Counter("mingpian_queue_processed_total",
                                 "queue items a consumer processed", ["queue"],
                                 registry=self.registry)
        self.dead_lettered = Counter("mingpian_queue_dead_lettered_total",
                                     "queue items given up on after max attempts", ["queue"],
                                     registry=self.registry)
        self.multiprocess_dir = _active_multiprocess_dir()

    def exposition(self) -> bytes:
        """Return the Prometheus text: of every process sharing the multiprocess directory,
        or of this process alone."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def consumer_stats(self, queue: str) -> ConsumerStats:
        """Return consumer stats that also count into processed / dead_lettered."""
        return CountingStats(processed=self.processed.labels(queue),
                             dead=self.dead_lettered.labels(queue))

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count and time one answered request."""
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)


class CountingStats(ConsumerStats):
    """ConsumerStats whose ``processed`` and ``dead`` also advance Prometheus counters."""

    _counters: dict[str, Counter]

    def __init__(self, *, processed: Counter, dead: Counter) -> None:
        object.__setattr__(self, "_counters", {"processed": processed, "dead": dead})
        super().__init__()

    def __setattr__(self, name: str, value: Any) -> None:
        counter: Counter | None = self._counters.get(name)
        if counter is not None:
            delta = value - getattr(self, name, 0)
            if delta > 0:
                counter.inc(delta)
        super().__setattr__(name, value)


class MetricsMiddleware(HttpMiddleware):
    """Count and time every request by its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
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


class OpsGateMiddleware(HttpMiddleware):
    """Answer OPS_PATHS only to clients inside the ops networks; everyone else gets the
    same 404 as a route that does not exist."""

    def __init__(self, app: ASGIApp, *, networks: tuple[Network, ...],
                 trusted_proxies: tuple[Network, ...]) -> None:
        super().__init__(app)
        self.networks = networks
        self.trusted_proxies = trusted_proxies

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] in OPS_PATHS and not in_networks(
                client_address(scope, self.trusted_proxies), self.networks):
            await app_error_response(NotFoundError("Not Found"))(scope, receive, send)
            return
        await self.app(scope, receive, send)
