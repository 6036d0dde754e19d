"""Typed dependencies handed to routers: every `...Dep` lives here, so no router imports
another."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.bot_wiring import BotKit
from app.services import Services
from app.settings import Settings
from cards.service import CardsService
from catalog.repo import CatalogRepo
from models.errors import UnauthorizedError
from nlp.index import VectorIndex
from nlp.profile import ProfileRepo
from nlp.recommend import Recommender
from store import Store


def get_services(request: Request) -> Services:
    """Return the process's services (built in lifespan)."""
    services: Services = request.state.services
    return services


def get_store(request: Request) -> Store:
    """Return the store."""
    return get_services(request).store


def get_settings_dep(request: Request) -> Settings:
    """Return the settings."""
    return get_services(request).settings


# The getters below are async with no sub-dependency: an attribute read costs no thread hop
# (the recommender's is on the mall's hot path).
async def get_bot(request: Request) -> BotKit:
    """Return the bot: callbacks, inbox, replier."""
    return get_services(request).bot


async def get_cards(request: Request) -> CardsService:
    """Return the cards domain."""
    return get_services(request).cards


async def get_catalog(request: Request) -> CatalogRepo:
    """Return the catalog repository."""
    return get_services(request).catalog


async def get_index(request: Request) -> VectorIndex:
    """Return the vector index following the catalog."""
    return get_services(request).index


async def get_profiles(request: Request) -> ProfileRepo:
    """Return the profile repository."""
    return get_services(request).profiles


async def get_recommender(request: Request) -> Recommender:
    """Return the recommender."""
    return get_services(request).recommender


ServicesDep = Annotated[Services, Depends(get_services)]
StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
BotDep = Annotated[BotKit, Depends(get_bot)]
CardsDep = Annotated[CardsService, Depends(get_cards)]
CatalogDep = Annotated[CatalogRepo, Depends(get_catalog)]
IndexDep = Annotated[VectorIndex, Depends(get_index)]
ProfilesDep = Annotated[ProfileRepo, Depends(get_profiles)]
RecommenderDep = Annotated[Recommender, Depends(get_recommender)]


# Declared as security schemes so /docs has an Authorize button; auto_error=False because a
# missing key is answered by require_api_key with the API's own 401 body.
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="one of MINGPIAN_API_KEYS")
bearer = HTTPBearer(auto_error=False, description="one of MINGPIAN_API_KEYS, as a Bearer token")


async def require_api_key(
    request: Request,
    header_key: Annotated[str | None, Depends(api_key_header)],
    bearer_key: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Accept `X-API-Key: KEY` or else `Authorization: Bearer KEY` for a configured key."""
    keys = get_services(request).settings.api_key_list()
    if not keys:
        raise UnauthorizedError("no API keys are configured (set MINGPIAN_API_KEYS)")
    given = header_key or (bearer_key.credentials if bearer_key is not None else "")
    if not given or not any(hmac.compare_digest(given.encode(), k.encode()) for k in keys):
        raise UnauthorizedError("missing or invalid API key")


ApiKey = Depends(require_api_key)
