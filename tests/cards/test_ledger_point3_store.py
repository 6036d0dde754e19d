"""Issue 12 points 3 and 4 at the level of the plan over the store (both back-ends).

Point 3: balances read the verified chain, never the per-beneficiary copies; the head is
signed with the ledger key. Point 4: the freeze runs from the receive time.
"""

from __future__ import annotations

import pytest

from cards.orders import LedgerIntegrityError, PlanLedger
from cards.plan import (
    InvalidOrderError,
    MemoryPlanState,
    OrderEvent,
    OrderItem,
    PlanConfig,
    PlanEngine,
)
from cards.share import Shares
from store import Store
from tests.cards.support import DAY, SECRET, T0, Clock, make_ledger, order
from tests.cards.test_plan_store import _team


def _keyed(store: Store, clock: Clock, key: bytes) -> PlanLedger:
    shares = Shares(store, secret=SECRET, tz_offset_hours=8, clock=clock)
    return PlanLedger(store, config=PlanConfig(), policy="first", window_days=30,
                      resolve_code=shares.sharer_of, clock=clock, ledger_key=key)


def test_point3_copy_appended_in_store_changes_no_balance(store: Store) -> None:
    clock = Clock()
    ledger = _keyed(store, clock, b"k" * 32)
    _, shares = make_ledger(store, clock)
    _team(ledger, shares, clock)
    before = ledger.rewards("B")
    name = ledger.names.get("B")
    assert name is not None
    forged = dict(ledger.ledger_rows()[0], beneficiary=name, amount_cents=99_999)
    store.append(f"plan.ben.{name}", [forged])
    assert ledger.rewards("B") == before
    assert _keyed(store, clock, b"k" * 32).rewards("B") == before  # a fresh process too
    result = ledger.verify()
    assert not result.ok and "rewards view of B" in result.reason


def test_point3_head_signed_with_another_key_is_refused(store: Store) -> None:
    clock = Clock()
    writer = _keyed(store, clock, b"a" * 32)
    _, shares = make_ledger(store, clock)
    _team(writer, shares, clock)
    assert writer.verify().ok and writer.head().valid
    other = _keyed(store, clock, b"b" * 32)
    result = other.verify()
    assert not result.ok and "HMAC" in result.reason
    assert not other.head().valid
    with pytest.raises(LedgerIntegrityError):
        other.rewards("B")
    with pytest.raises(LedgerIntegrityError):
        other.submit_order(order("o-x", "A1", "completed"), ref_code=None)


def test_point4_check_order_refuses_before_storing(store: Store) -> None:
    clock = Clock()
    ledger = _keyed(store, clock, b"k" * 32)
    too_much = OrderEvent(order_id="o-1", user_id="u", status="completed", amount_cents=1_000,
                          ts=T0, items=(OrderItem(item_id="sku", amount_cents=100_000),))
    with pytest.raises(InvalidOrderError):
        ledger.submit_order(too_much, ref_code=None)
    ahead = OrderEvent(order_id="o-2", user_id="u", status="paid", amount_cents=0,
                       ts=T0 + 301)
    with pytest.raises(InvalidOrderError):
        ledger.submit_order(ahead, ref_code=None)
    assert ledger.pending() == 0 and ledger.cursor().events == 0


def test_point4_freeze_runs_from_received_ts() -> None:
    engine = PlanEngine(PlanConfig(), MemoryPlanState())
    engine.bind("m", "r", ts=T0 - DAY)
    engine.apply_order_event(OrderEvent(order_id="o-r", user_id="r", status="completed",
                                        amount_cents=100, ts=T0 - DAY,
                                        items=(OrderItem(item_id="sku", amount_cents=100),)))
    [draft] = engine.apply_order_event(OrderEvent(
        order_id="o-m", user_id="m", status="completed", amount_cents=10_000, ts=T0 - 30 * DAY,
        received_ts=T0, items=(OrderItem(item_id="sku", amount_cents=10_000),)))
    assert draft.completed_ts == T0 and draft.ts == T0 - 30 * DAY
