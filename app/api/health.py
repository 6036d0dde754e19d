"""Liveness and metrics."""

from __future__ import annotations

from contextlib import suppress

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.deps import ServicesDep
from app.metrics import Metrics
from app.services import INBOX

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz(services: ServicesDep) -> JSONResponse:
    """Return 200 when the store answers, else 503."""
    ok = services.store.ping()
    body = {"status": "ok" if ok else "unavailable", "store": services.store.backend}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics")
def metrics(request: Request, services: ServicesDep) -> Response:
    """Return Prometheus text (to the ops networks only: OpsGateMiddleware, app/metrics.py)."""
    m: Metrics = request.app.state.metrics
    # Metrics must answer even when the store does not.
    with suppress(Exception):
        m.queue_depth.labels(INBOX).set(services.store.queue_depth(INBOX))
    return Response(m.exposition(), media_type=CONTENT_TYPE_LATEST)
