"""Fixtures of the app tests: the services, the app over them, and a client of it.

A module changes what it gets by overriding one fixture: `services` (seeded data), `app`
(an extra router), or `client` = `bot_client` (WeCom and the Official Account configured).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import MingpianApp, create_app
from app.services import Services, build_services
from app.settings import Settings
from tests.bot.support import bot_settings

# From loopback, like an operator on the host: /metrics and /docs answer only to the ops
# networks, and TestClient's own peer ("testclient") is in none.
LOOPBACK = ("127.0.0.1", 50000)


@pytest.fixture
def redis_or_none(backend: str, request: pytest.FixtureRequest) -> str | None:
    """The emptied session Redis for the redis back-end; None (embedded SQLite) otherwise."""
    return str(request.getfixturevalue("clean_redis_url")) if backend == "redis" else None


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """The services over the test's settings, closed afterwards."""
    svc = build_services(settings)
    yield svc
    svc.close()


@pytest.fixture
def app(settings: Settings, services: Services) -> MingpianApp:
    """The app over the test's services."""
    return create_app(settings, services=services)


@pytest.fixture
def client(app: MingpianApp) -> Iterator[TestClient]:
    """A client of the running app (lifespan entered), calling from loopback."""
    with TestClient(app, client=LOOPBACK) as c:
        yield c


@pytest.fixture
def bot_config(tmp_path: Path, redis_or_none: str | None) -> Settings:
    """Settings with WeCom and the Official Account configured with the sample keys."""
    return bot_settings(tmp_path / "data", redis_url=redis_or_none)


@pytest.fixture
def bot_client(bot_config: Settings) -> Iterator[TestClient]:
    """A client of an app over bot_config, its services built by the lifespan."""
    with TestClient(create_app(bot_config), client=LOOPBACK) as c:
        yield c
