"""Learning from what people do (issue 15 point 7), through the public routes: orders (paid,
not refunded) feed the buyer's profile, purchases and per-provider popularity exactly once,
also an order a crashed process accepted and a later catch-up applied; consumables come
back after their repurchase interval; the mall's views count once per event id."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services import Services, build_services
from cards.plan import OrderEvent, OrderItem
from tests.app.conftest import LOOPBACK
from tests.bot.support import load_demo_catalog
from tests.conftest import API_KEY, make_settings

H = {"X-API-Key": API_KEY}
MALL = "mall-2002"
DIAPERS = "sku-10001"  # 新生儿纸尿裤: repurchase_days 30 in the demo catalog
STROLLER = "sku-10029"  # no repurchase interval: once bought, never again
CARD = {"staff_id": "staff-chen", "name": "陈静", "title": "母婴顾问", "company": "好孕母婴",
        "phone": "138-0013-8001", "bio": "", "provider_id": "sh-01",
        "wecom_user_id": "chenj"}


@pytest.fixture
def env(backend: str, tmp_path: Path, request: pytest.FixtureRequest
        ) -> Iterator[tuple[TestClient, Services]]:
    redis_url = request.getfixturevalue("clean_redis_url") if backend == "redis" else None
    settings = make_settings(tmp_path / "data", redis_url=redis_url, embedder="hash",
                             embedded_worker=False)
    services = build_services(settings)
    try:
        with TestClient(create_app(settings, services=services), client=LOOPBACK) as client:
            load_demo_catalog(services)
            services.recommender.signals.ttl_s = 0.0  # read popularity fresh
            yield client, services
    finally:
        services.close()


def _code(client: TestClient) -> str:
    card = client.post("/v1/cards", json=CARD, headers=H).json()
    r = client.post(f"/v1/cards/{card['id']}/shares", json={"sharer_id": "staff-chen"},
                    headers=H)
    return str(r.json()["code"])


def _order(status: str, *, order_id: str = "o-1", item: str = DIAPERS, refund: int = 0,
           code: str | None = None) -> dict[str, Any]:
    return {"order_id": order_id, "user_id": MALL, "status": status, "amount_cents": 9900,
            "refund_cents": refund, "items": [{"item_id": item, "amount_cents": 9900}],
            "ref_code": code, "ts": int(time.time()) - 60}


def _tag(client: TestClient, tag: str) -> float:
    r = client.get(f"/v1/users/{MALL}/profile", headers=H)
    if r.status_code == 404:
        return 0.0
    return {t["tag"]: float(t["weight"]) for t in r.json()["tags"]}.get(tag, 0.0)


def _recommended(client: TestClient) -> list[str]:
    r = client.get("/v1/recommendations", params={"user_id": MALL, "k": 100}, headers=H)
    return [i["id"] for i in r.json()["items"]]


def test_point7_an_order_applied_by_catch_up_is_learnt_once(
        env: tuple[TestClient, Services]) -> None:
    client, services = env
    code = _code(client)
    signals = services.recommender.signals
    # A process accepted the paid event and died before applying it or telling anyone.
    event = OrderEvent(order_id="o-1", user_id=MALL, status="paid", amount_cents=9900,
                       items=(OrderItem(item_id=DIAPERS, amount_cents=9900),),
                       ts=int(time.time()) - 60)
    sub = services.cards.ledger.submit_order(event, ref_code=code, apply=False)
    assert sub.outcome is None and services.cards.ledger.pending() == 1
    assert signals.bought(MALL) == frozenset() and signals.events(DIAPERS)["order"] == 0
    # Any later read of the plan catches up: the ledger, and the recommender with it.
    assert client.get("/v1/rewards", params={"user_id": MALL}, headers=H).status_code == 200
    assert services.cards.ledger.pending() == 0
    assert signals.bought(MALL) == {DIAPERS}
    assert signals.events(DIAPERS)["order"] == 1
    assert DIAPERS in dict(signals.popular("sh-01"))  # the card's provider
    assert _tag(client, "纸尿裤") == pytest.approx(1.0, abs=1e-3)
    assert DIAPERS not in _recommended(client)
    # The mall's retry and the completion change nothing more.
    for body in (_order("paid", code=code), _order("completed", code=code)):
        assert client.post("/v1/orders", json=body, headers=H).status_code == 200
    client.get("/v1/rewards", params={"user_id": MALL}, headers=H)
    assert signals.events(DIAPERS)["order"] == 1
    assert _tag(client, "纸尿裤") == pytest.approx(1.0, abs=1e-3)
    # A full refund takes it back: not bought, not popular, not an interest.
    r = client.post("/v1/orders", json=_order("refunded", refund=9900, code=code), headers=H)
    assert r.status_code == 200
    assert signals.bought(MALL) == frozenset()
    assert signals.events(DIAPERS)["order"] == 0
    assert DIAPERS not in dict(signals.popular("sh-01"))
    assert _tag(client, "纸尿裤") == 0.0


def test_point7_a_partial_refund_keeps_the_order(env: tuple[TestClient, Services]) -> None:
    client, services = env
    client.post("/v1/orders", json=_order("paid"), headers=H)
    client.post("/v1/orders", json=_order("refunded", refund=100), headers=H)
    assert services.recommender.signals.bought(MALL) == {DIAPERS}


def test_point7_consumables_come_back_after_their_interval(
        env: tuple[TestClient, Services]) -> None:
    client, services = env
    for n, item in enumerate((DIAPERS, STROLLER)):
        r = client.post("/v1/orders", json=_order("paid", order_id=f"o-{n}", item=item),
                        headers=H)
        assert r.status_code == 200
    first = _recommended(client)
    assert first and DIAPERS not in first and STROLLER not in first
    signals = services.recommender.signals
    now = time.time()
    signals.clock = lambda: now + 31 * 86_400  # a month on
    later = _recommended(client)
    assert DIAPERS in later  # time to buy diapers again
    assert STROLLER not in later
    assert signals.bought(MALL) == {STROLLER}  # a stroller stays bought


def test_point7_mall_views_count_once_per_event_and_feed_the_profile(
        env: tuple[TestClient, Services]) -> None:
    client, services = env
    ev = {"event": "view", "item_id": DIAPERS, "provider_id": "gz-01", "user_id": MALL,
          "event_id": "ev-1"}
    answers = [client.post("/v1/catalog/events", json=ev, headers=H).json()["status"]
               for _ in range(3)]
    assert answers == ["recorded", "duplicate", "duplicate"]
    assert services.recommender.signals.events(DIAPERS)["view"] == 1
    assert [i for i, _ in services.recommender.signals.popular("gz-01")] == [DIAPERS]
    assert _tag(client, "纸尿裤") == pytest.approx(0.1, abs=1e-3)
    # Without an id every post counts (the mall did not say it was a repeat).
    client.post("/v1/catalog/events", json=ev | {"event_id": None}, headers=H)
    assert services.recommender.signals.events(DIAPERS)["view"] == 2
