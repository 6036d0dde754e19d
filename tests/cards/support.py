"""Helpers shared by the cards persistence tests (not fixtures: plain functions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cards.orders import PlanLedger
from cards.plan import BindPolicy, OrderEvent, OrderItem, OrderStatus, PlanConfig
from cards.share import Shares
from store import Store

T0 = 1_764_000_000
DAY = 86_400
SECRET = b"test-share-secret"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make_ledger(store: Store, clock: Clock, *, policy: BindPolicy = "first", window_days: int = 30,
                config: PlanConfig | None = None) -> tuple[PlanLedger, Shares]:
    """Return a plan ledger and the share codes it resolves, over store."""
    shares = Shares(store, secret=SECRET, tz_offset_hours=8, clock=clock)
    ledger = PlanLedger(store, config=config or PlanConfig(), policy=policy,
                        window_days=window_days, resolve_code=shares.sharer_of, clock=clock)
    return ledger, shares


def order(order_id: str, user_id: str, status: OrderStatus, *, eligible: int = 10_000,
          ineligible: int = 0, refund: int = 0, ts: int = T0) -> OrderEvent:
    """Return an order event with one eligible line (and an optional fee line)."""
    items = [OrderItem(item_id="sku-1", amount_cents=eligible)]
    if ineligible:
        items.append(OrderItem(item_id="fee", amount_cents=ineligible, reward_eligible=False))
    return OrderEvent(order_id=order_id, user_id=user_id, status=status,
                      amount_cents=eligible + ineligible, refund_cents=refund,
                      items=tuple(items), ts=ts)


def credits(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], int]:
    """(order, beneficiary, rule) -> net credited cents (withheld entries excluded)."""
    out: dict[tuple[str, str, str], int] = {}
    for r in rows:
        if r["kind"] != "withheld":
            key = (r["order_id"], r["beneficiary"], r["rule"])
            out[key] = out.get(key, 0) + r["amount_cents"]
    return out
