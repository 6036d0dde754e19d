"""A running app with a hand-moved clock, for the cards and orders API tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient

from app.main import create_app
from app.services import Services, build_services
from app.settings import Settings
from models.catalog import CatalogItem
from tests.cards.support import Clock
from tests.conftest import API_KEY

H = {"Authorization": f"Bearer {API_KEY}"}


def catalog_item(item_id: str, title: str, url: str, *, price_cents: int = 6900,
                 kind: str = "product", active: bool = True) -> dict[str, Any]:
    """Return a CONTRACTS §4 item."""
    return {"id": item_id, "kind": kind, "title": title, "price_cents": price_cents,
            "url": url, "availability": [], "active": active, "tags": [], "category": "母婴/辅食"}


def seed_catalog(services: Services, items: list[dict[str, Any]]) -> None:
    """Upsert items through the catalog (embedded, indexed) and wait for the index."""
    services.catalog.upsert([CatalogItem.model_validate(i) for i in items])
    services.index.refresh()


@dataclass
class Env:
    """A test client, the services behind it and the clock they read."""

    client: TestClient
    services: Services
    clock: Clock

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.client.post(path, json=body, headers=H)

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=H, **kw)


@contextmanager
def running(settings: Settings) -> Iterator[Env]:
    """Yield the app over settings, with the cards domain on a controllable clock."""
    clock = Clock()
    svc = build_services(settings, clock=clock)
    try:
        with TestClient(create_app(settings, services=svc)) as client:
            yield Env(client, svc, clock)
    finally:
        svc.close()
