"""Issue 12 point 4: order events that cannot be true are refused; the freeze counts from receipt.

Both back-ends, through the mall's webhook.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.settings import Settings
from cards.plan_store import LOG_EVENTS
from tests.app.cards_env import Env, running
from tests.app.test_orders_api import bind, complete, rewards, team
from tests.cards.support import DAY, T0


@pytest.fixture
def env(settings: Settings) -> Iterator[Env]:
    with running(settings) as e:
        yield e


def _order(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"order_id": "o-m", "user_id": "m", "status": "completed",
                            "amount_cents": 1_000, "refund_cents": 0, "ts": T0,
                            "items": [{"item_id": "sku-1", "amount_cents": 1_000}]}
    return body | fields


def _events(env: Env) -> int:
    return env.services.store.log_length(LOG_EVENTS)


def test_point4_eligible_over_amount_is_422(env: Env) -> None:
    team(env)
    bind(env, "m", "A3")
    before, stored = rewards(env, "A3"), _events(env)
    # 1,000.00 of reward-eligible items on a 10.00 order.
    r = env.post("/v1/orders", _order(items=[{"item_id": "sku-1", "amount_cents": 100_000}]))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_order"
    assert "eligible" in r.json()["error"]["message"]
    assert rewards(env, "A3") == before and _events(env) == stored


def test_point4_items_over_amount_is_422(env: Env) -> None:
    """Ineligible lines count too: all items together may not exceed the order's amount."""
    team(env)
    bind(env, "m", "A3")
    items = [{"item_id": "sku-1", "amount_cents": 1_000},
             {"item_id": "vip-fee", "amount_cents": 1, "reward_eligible": False}]
    for status in ("paid", "completed", "refunded"):
        r = env.post("/v1/orders", _order(status=status, items=items))
        assert r.status_code == 422, r.text
    # Items summing to exactly the amount (or less: shipping) are fine.
    assert env.post("/v1/orders", _order(amount_cents=1_001, items=items)).status_code == 200


def test_point4_future_ts_is_422(env: Env) -> None:
    env.clock.t = T0
    stored = _events(env)
    r = env.post("/v1/orders", _order(ts=T0 + 5 * 60 + 1))
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_order", r.text
    assert _events(env) == stored
    rfc3339 = env.post("/v1/orders", _order(ts="2030-01-01T00:00:00Z"))
    assert rfc3339.status_code == 422, rfc3339.text
    # A mall clock up to five minutes ahead is accepted.
    assert env.post("/v1/orders", _order(ts=T0 + 5 * 60)).status_code == 200


def test_point4_backdated_completed_still_frozen(env: Env) -> None:
    team(env)
    bind(env, "m", "A3")
    env.clock.t = T0 + 30 * DAY
    complete(env, "o-m", "m", ts=T0)  # dated 30 days back: past any freeze by its ts
    mine = [e for e in rewards(env, "A3")["entries"] if e["order_id"] == "o-m"]
    assert [(e["status"], e["amount_cents"]) for e in mine] == [("pending", 1_000)]
    env.clock.t = T0 + 37 * DAY - 1
    assert [e["status"] for e in rewards(env, "A3")["entries"] if e["order_id"] == "o-m"] \
        == ["pending"]
    env.clock.t = T0 + 37 * DAY
    assert [e["status"] for e in rewards(env, "A3")["entries"] if e["order_id"] == "o-m"] \
        == ["payable"]
    # The receive time is stored with the event: a replay freezes from the same moment.
    report = env.services.cards.ledger.rebuild()
    assert report.identical and not report.entry_diffs
