"""Typed dependencies handed to routers: every `...Dep` lives here, so no router imports
another."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.bot_wiring import BotKit
from app.catalog_wiring import CatalogService
from app.customer_wiring import CustomerKit
from app.services import Services
from app.settings import Settings
from cards.service import CardsService
from models.errors import UnauthorizedError
from nlp.identity import IdentityRepo
from nlp.profile import ProfileRepo
from nlp.recommend import Recommender
from store import Store

T = TypeVar("T")


def get_services(request: Request) -> Services:
    """Return the process's services (built in lifespan)."""
    services: Services = request.state.services
    return services


def _part(read: Callable[[Services], T]) -> Callable[[Request], Awaitable[T]]:
    """Return a dependency that hands out read(services): one part of the services.

    Async with no sub-dependency: an attribute read costs no thread hop (the recommender's
    is on the mall's hot path)."""

    async def get(request: Request) -> T:
        return read(get_services(request))

    return get


ServicesDep = Annotated[Services, Depends(get_services)]
StoreDep = Annotated[Store, Depends(_part(lambda s: s.store))]
SettingsDep = Annotated[Settings, Depends(_part(lambda s: s.settings))]
BotDep = Annotated[BotKit, Depends(_part(lambda s: s.bot))]  # callbacks, inbox, replier
CardsDep = Annotated[CardsService, Depends(_part(lambda s: s.cards))]
CatalogServiceDep = Annotated[CatalogService, Depends(_part(lambda s: s.catalog_service))]
ProfilesDep = Annotated[ProfileRepo, Depends(_part(lambda s: s.profiles))]
RecommenderDep = Annotated[Recommender, Depends(_part(lambda s: s.recommender))]
# Sign-in on card pages, tags back into WeCom, the sidebar (issue 15, app/customer_wiring.py).
CustomersDep = Annotated[CustomerKit, Depends(_part(lambda s: s.customers))]
IdentitiesDep = Annotated[IdentityRepo, Depends(_part(lambda s: s.identities))]


# Declared as security schemes so /docs has an Authorize button; auto_error=False because a
# missing key is answered by require_api_key with the API's own 401 body.
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="one of MINGPIAN_API_KEYS")
bearer = HTTPBearer(auto_error=False, description="one of MINGPIAN_API_KEYS, as a Bearer token")


def is_api_key(given: str, keys: Sequence[str]) -> bool:
    """Return whether given is one of keys (in constant time per key)."""
    return bool(given) and any(hmac.compare_digest(given.encode(), k.encode()) for k in keys)


def _given(header_key: str | None, bearer_key: HTTPAuthorizationCredentials | None) -> str:
    return header_key or (bearer_key.credentials if bearer_key is not None else "")


async def presented_api_key(request: Request) -> str:
    """Return the key a request presents, read as require_api_key reads it (the same two
    security schemes): `X-API-Key`, else an `Authorization: Bearer` token; "" when neither.
    For the fast paths ahead of FastAPI's dependencies (app/api/recommend.py)."""
    return _given(await api_key_header(request), await bearer(request))


async def require_api_key(
    request: Request,
    header_key: Annotated[str | None, Depends(api_key_header)],
    bearer_key: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Accept `X-API-Key: KEY` or else `Authorization: Bearer KEY` for a configured key."""
    keys = get_services(request).settings.api_key_list()
    if not keys:
        raise UnauthorizedError("no API keys are configured (set MINGPIAN_API_KEYS)")
    if not is_api_key(_given(header_key, bearer_key), keys):
        raise UnauthorizedError("missing or invalid API key")


ApiKey = Depends(require_api_key)
