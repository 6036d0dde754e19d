"""create_app(): the FastAPI application and its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from app.api import (
    aibot,
    cards,
    catalog,
    groups,
    health,
    identities,
    messages,
    orders,
    profiles,
    recommend,
    sidebar,
    viewer,
    wechat,
)
from app.clientaddr import parse_networks
from app.console.routes import install as install_console
from app.errors import install_error_handlers
from app.limits import BodyLimitMiddleware
from app.metrics import Metrics, MetricsMiddleware, OpsGateMiddleware, ops_networks
from app.public_rate import PublicLimiter
from app.services import Services, build_services
from app.settings import Settings, get_settings
from app.worker import consumer_embedder, start_background_worker

log = logging.getLogger("mingpian")


class MingpianApp(FastAPI):
    """FastAPI, except for the hot paths, answered before the middleware stack and routing:
    WeChat's and WeCom's callback POSTs by ``callbacks`` (app/api/wechat.py; their OpenAPI
    entries are added to the generated schema), and the mall's valid page views and
    searches by ``mall`` (app/api/recommend.py; any other request to those paths goes on to
    its route)."""

    def __init__(self, *, callbacks: wechat.CallbackPosts, mall: recommend.MallRequests,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.callbacks = callbacks
        self.mall = mall

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await self.callbacks.handle(scope, receive, send):
            return
        go_on = await self.mall.handle(scope, receive, send)
        if go_on is not None:
            await super().__call__(scope, go_on, send)

    def openapi(self) -> dict[str, Any]:
        """Return the OpenAPI schema, the callback POSTs included."""
        if self.openapi_schema is None:
            self.openapi_schema = wechat.document_posts(super().openapi())
        return self.openapi_schema


def create_app(settings: Settings | None = None, *,
               services: Services | None = None,
               consumer_children: bool = False) -> MingpianApp:
    """Build the service; heavy objects are made in lifespan (or passed in by tests).

    ``consumer_children`` (`mingpian serve`): the embedded consumer tags with the model in
    child processes (app/worker.consumer_embedder), off the serving process's GIL."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        tagging = consumer_embedder(settings) if consumer_children and not services else None
        svc = services or build_services(settings, tagging_embedder=tagging)
        worker = None
        if settings.embedded_worker and svc.store.backend == "sqlite":
            worker = start_background_worker(svc, metrics=app.state.metrics)
        try:
            yield {"services": svc}
        finally:
            if worker is not None:
                thread, stop = worker
                stop.set()
                thread.join(timeout=10)
            if services is None:
                svc.close()
            if tagging is not None:
                tagging.close()

    metrics = Metrics()
    app = MingpianApp(
        callbacks=wechat.CallbackPosts(metrics=metrics,
                                       max_bytes=settings.max_callback_bytes),
        mall=recommend.MallRequests(metrics=metrics, max_body_bytes=settings.max_body_bytes),
        title="mingpian 名片",
        version="0.1.0",
        description="WeChat/WeCom group chat → interest profiles → recommendations, "
        "smart cards and a compliant referral ledger.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    install_error_handlers(app)
    app.state.public_limiter = PublicLimiter.from_settings(settings)  # /c, /s, /r, posters
    for module in (health, wechat, aibot, messages, profiles, catalog, recommend, cards, viewer,
                   orders, sidebar):
        app.include_router(module.router)
    app.include_router(identities.router)  # /v1/identities (issue 15)
    app.include_router(groups.router)  # /v1/groups/{id}/settings (issue 15)
    app.include_router(recommend.items_router)  # /v1/items/{id}/similar (issue 16)
    install_console(app)  # /console: the operator's pages (issue 18)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(OpsGateMiddleware, networks=ops_networks(settings.ops_networks),
                       trusted_proxies=parse_networks(settings.trusted_proxies))
    return app
