"""Typed dependencies handed to routers."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from app.services import Services
from app.settings import Settings
from models.errors import UnauthorizedError
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


ServicesDep = Annotated[Services, Depends(get_services)]
StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def require_api_key(request: Request) -> None:
    """Accept `Authorization: Bearer KEY` or `X-API-Key: KEY` for a configured key."""
    keys = get_services(request).settings.api_key_list()
    if not keys:
        raise UnauthorizedError("no API keys are configured (set MINGPIAN_API_KEYS)")
    given = request.headers.get("x-api-key", "")
    auth = request.headers.get("authorization", "")
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not given or not any(hmac.compare_digest(given.encode(), k.encode()) for k in keys):
        raise UnauthorizedError("missing or invalid API key")


ApiKey = Depends(require_api_key)
