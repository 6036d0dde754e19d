"""Recommendations (CONTRACTS §5): for a user on every mall page view, for free text, and
items similar to one (``GET /v1/items/{id}/similar``, ``items_router``)."""

from __future__ import annotations

import os
from typing import Annotated, Literal

import anyio
import anyio.to_thread
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.deps import ApiKey, IdentitiesDep, RecommenderDep, get_services
from app.metrics import Metrics
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


def _answer(request: Request, result: RecommendationResult) -> JSONResponse:
    metrics: Metrics | None = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.events.labels(f"recommend_{result.strategy}").inc()
    # Built by hand (the shape is fixed, see Recommendations): this runs on every page view,
    # and the items' own dicts are flat (dataclasses.asdict deep-copies them: 4 % of one).
    return JSONResponse({"items": [vars(i) for i in result.items],
                         "strategy": result.strategy, "confident": result.confident})


# Recommending is CPU work: as many at a time as there are cores. More threads at once only
# fight over the GIL and the caches (at 16 connections: 193 req/s unbounded, measured).
_LIMIT = anyio.CapacityLimiter(os.cpu_count() or 1)


@router.get("", response_model=Recommendations)
async def recommend_for_user(  # noqa: PLR0913  the query parameters of CONTRACTS §5, each named
    request: Request,
    *,
    recommender: RecommenderDep,
    user_id: Annotated[str, Query(pattern=ID_PATTERN)],
    k: Annotated[int, Query(ge=1, le=100)] = 10,
    provider_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    kind: Kind | None = None,
    diversity: Annotated[float, Query(ge=0.0, le=1.0)] = 0.3,
    group_id: Annotated[str | None, Query(
        pattern=ID_PATTERN, description="the group the user is seen in (cold start)")] = None,
    min_confidence: Annotated[float, Query(ge=0.0, le=1.0)] = 0.0,
) -> JSONResponse:
    """Return up to k items for the user: from their profile, else their group's, else the
    provider's popular items, else everyone's (``strategy`` says which). A linked id
    (WeChat, WeCom) stands for its person (issue 15)."""
    identities = get_services(request).identities

    def run() -> RecommendationResult:
        return recommender.for_user(identities.canonical(user_id), k=k, provider_id=provider_id,
                                    kind=kind, diversity=diversity, group_id=group_id,
                                    min_confidence=min_confidence)

    result = await anyio.to_thread.run_sync(run, limiter=_LIMIT)
    return _answer(request, result)


@router.post("/query", response_model=Recommendations)
async def recommend_for_text(request: Request, body: QueryIn,
                             recommender: RecommenderDep,
                             identities: IdentitiesDep) -> JSONResponse:
    """Return up to k items that answer a chat message or a search text."""

    def run() -> RecommendationResult:
        user = identities.canonical(body.user_id) if body.user_id else None
        return recommender.for_text(body.text, k=body.k, provider_id=body.provider_id,
                                    kind=body.kind, user_id=user,
                                    min_confidence=body.min_confidence)

    result = await anyio.to_thread.run_sync(run, limiter=_LIMIT)
    return _answer(request, result)


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
    return _answer(request, result)
