"""Recommendations (CONTRACTS §5): for a user on every mall page view, for free text, and
items similar to one (``GET /v1/items/{id}/similar``, ``items_router``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated, Literal

import anyio
import anyio.to_thread
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from starlette.types import Message, Receive, Scope, Send

from app.console.activity import counted
from app.deps import ApiKey, RecommenderDep, get_services, is_api_key, presented_api_key
from app.errors import error_response
from app.limits import declared_length, read_body
from app.metrics import Metrics
from app.services import Services
from models.errors import NotFoundError
from models.ids import ID_PATTERN, Id
from nlp.recommend import RecommendationResult

router = APIRouter(prefix="/v1/recommendations", tags=["recommendations"],
                   dependencies=[ApiKey])
items_router = APIRouter(prefix="/v1/items", tags=["recommendations"], dependencies=[ApiKey])

Kind = Literal["product", "course"]


class RecommendedItem(BaseModel):
    """One item of the answer."""

    id: str
    kind: str
    title: str
    score: float
    confidence: float = Field(description="calibrated chance (0..1) that the item answers")
    price_cents: int
    url: str
    reason: str


class Recommendations(BaseModel):
    """The answer: items best first, the strategy that produced them, and whether mingpian
    is confident they answer (false for chit-chat and off-topic text)."""

    items: list[RecommendedItem]
    strategy: Literal["profile", "group", "provider_popular", "global_popular", "query",
                      "similar"]
    confident: bool


class QueryIn(BaseModel):
    """Body of ``POST /v1/recommendations/query``."""

    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                           max_length=2000)]
    k: int = Field(default=10, ge=1, le=100)
    provider_id: Id | None = None
    kind: Kind | None = None
    user_id: Id | None = Field(default=None, description="exclude what this user bought")
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0,
                                  description="leave out items below this confidence")


class PageView(BaseModel):
    """The query of ``GET /v1/recommendations`` (CONTRACTS §5), for the route and MallRequests."""

    user_id: Annotated[str, Field(pattern=ID_PATTERN)]
    k: Annotated[int, Field(ge=1, le=100)] = 10
    provider_id: Annotated[str | None, Field(pattern=ID_PATTERN)] = None
    kind: Kind | None = None
    diversity: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3
    group_id: Annotated[str | None, Field(
        pattern=ID_PATTERN, description="the group the user is seen in (cold start)")] = None
    min_confidence: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0


def _answer(metrics: Metrics | None, result: RecommendationResult) -> JSONResponse:
    if metrics is not None:
        metrics.events.labels(f"recommend_{result.strategy}").inc()
    # Built by hand (the shape is fixed, see Recommendations): this runs on every page view,
    # and the items' own dicts are flat (dataclasses.asdict deep-copies them: 4 % of one).
    return JSONResponse({"items": [vars(i) for i in result.items],
                         "strategy": result.strategy, "confident": result.confident})


def _metrics(request: Request) -> Metrics | None:
    metrics: Metrics | None = getattr(request.app.state, "metrics", None)
    return metrics


# Recommending is CPU work: as many at a time as there are cores. More threads at once only
# fight over the GIL and the caches (at 16 connections: 193 req/s unbounded, measured).
_LIMIT = anyio.CapacityLimiter(os.cpu_count() or 1)


async def _page_view(services: Services, view: PageView) -> RecommendationResult:
    """Recommend for one page view, in a thread (the event loop keeps acknowledging)."""

    def run() -> RecommendationResult:
        return services.recommender.for_user(
            services.identities.canonical(view.user_id), k=view.k,
            provider_id=view.provider_id, kind=view.kind, diversity=view.diversity,
            group_id=view.group_id, min_confidence=view.min_confidence)

    return await anyio.to_thread.run_sync(run, limiter=_LIMIT)


async def _search(services: Services, query: QueryIn) -> RecommendationResult:
    """Answer one chat message or search text, in a thread."""

    def run() -> RecommendationResult:
        user = services.identities.canonical(query.user_id) if query.user_id else None
        return services.recommender.for_text(
            query.text, k=query.k, provider_id=query.provider_id, kind=query.kind,
            user_id=user, min_confidence=query.min_confidence)

    return await anyio.to_thread.run_sync(run, limiter=_LIMIT)


@router.get("", response_model=Recommendations)
async def recommend_for_user(request: Request,
                             view: Annotated[PageView, Query()]) -> JSONResponse:
    """Return up to k items for the user: from their profile, else their group's, else the
    provider's popular items, else everyone's (``strategy`` says which). A linked id
    (WeChat, WeCom) stands for its person (issue 15)."""
    result = await _page_view(get_services(request), view)
    return _answer(_metrics(request), result)


@router.post("/query", response_model=Recommendations)
async def recommend_for_text(request: Request, body: QueryIn) -> JSONResponse:
    """Return up to k items that answer a chat message or a search text."""
    result = await _search(get_services(request), body)
    return _answer(_metrics(request), result)


_PAGE_VIEW = ("GET", "/v1/recommendations")
_SEARCH = ("POST", "/v1/recommendations/query")


class MallRequests:
    """Answers the mall's two hot requests ahead of FastAPI's middleware stack and routing,
    when they are authorised and valid: a page view (``GET /v1/recommendations``, on every
    page the mall shows) and a search (``POST /v1/recommendations/query``). The stack cost
    as much of the event loop's CPU as the answer (issue 17, BENCHMARKS.md).

    Anything else, such as a missing key, a parameter out of range, a body that is not
    plain JSON or a body with no declared length, goes on to the routes above, which answer
    it as every endpoint does. Both paths validate with PageView and QueryIn and answer with
    _page_view and _search. This path keeps /metrics and the console's count of answers as
    the middleware would (app/metrics.py, app/console/activity.py)."""

    def __init__(self, *, metrics: Metrics, max_body_bytes: int) -> None:
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Answer a valid, authorised page view or search and return None. Otherwise
        return the receive the app goes on with: ``receive`` itself, or, once the body
        has been read, a receive that hands the same body on."""
        if scope["type"] != "http" or (route := (scope["method"], scope["path"])) not in (
                _PAGE_VIEW, _SEARCH):
            return receive
        start = time.perf_counter()
        services: Services | None = scope.get("state", {}).get("services")
        request = Request(scope)
        if services is None or not is_api_key(await presented_api_key(request),
                                              services.settings.api_key_list()):
            return receive
        work, go_on = await self._parse(route, request, receive, services)
        if work is None:
            return go_on
        try:
            response = _answer(self.metrics, await work())
        except Exception as exc:  # noqa: BLE001 - mapped exactly as the app maps it
            response = error_response(exc)
        await response(scope, receive, send)
        status = response.status_code
        self.metrics.observe_request(route[1], status, time.perf_counter() - start)
        if (what := counted(*route, status)) is not None:
            services.console.requests.add(what)
        return None

    async def _parse(self, route: tuple[str, str], request: Request, receive: Receive,
                     services: Services) -> tuple[_Work | None, Receive | None]:
        """Return (the work of a valid request, None), or (None, what the app goes on
        with: see handle; None when the client went away before sending its body)."""
        if route == _PAGE_VIEW:
            try:  # the query as FastAPI reads it: the last of each name
                view = PageView.model_validate(dict(request.query_params))
            except ValidationError:
                return None, receive
            return partial(_page_view, services, view), None
        if not _plain_json(request, self.max_body_bytes):
            return None, receive
        body = await read_body(receive, self.max_body_bytes)
        if body is None:
            return None, None
        try:
            query = QueryIn.model_validate(json.loads(body))
        except Exception:  # noqa: BLE001 - anything FastAPI would refuse, it refuses
            return None, _replay(body, receive)
        return partial(_search, services, query), None


_Work = Callable[[], Awaitable[RecommendationResult]]


def _plain_json(request: Request, max_bytes: int) -> bool:
    """Return whether a request declares a JSON body of a length within max_bytes."""
    length = declared_length(request.scope)
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return kind == "application/json" and length is not None and 0 <= length <= max_bytes


def _replay(body: bytes, receive: Receive) -> Receive:
    """Return a receive that hands on body first, then whatever receive has next."""
    given = False

    async def again() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


@items_router.get("/{item_id}/similar", response_model=Recommendations)
async def similar_items(
    request: Request,
    item_id: Annotated[str, Path(pattern=ID_PATTERN)],
    *,
    recommender: RecommenderDep,
    k: Annotated[int, Query(ge=1, le=100)] = 10,
    provider_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    kind: Kind | None = None,
    min_confidence: Annotated[float, Query(ge=0.0, le=1.0)] = 0.0,
) -> JSONResponse:
    """Return up to k items like this one (content: its vector and its title's words),
    available at the provider; 404 when the item is not in the catalog index."""

    def run() -> RecommendationResult | None:
        return recommender.similar(item_id, k=k, provider_id=provider_id, kind=kind,
                                   min_confidence=min_confidence)

    result = await anyio.to_thread.run_sync(run, limiter=_LIMIT)
    if result is None:
        raise NotFoundError(f"no indexed catalog item {item_id!r}")
    return _answer(_metrics(request), result)
