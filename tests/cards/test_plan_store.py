"""The plan over the store (both back-ends): accept → apply → one atomic commit per step.

The engine's rules are tested in test_plan.py; here: durability, exactly-once across
appliers, crash recovery, rebuild by replay, pseudonyms and erasure.
"""

from __future__ import annotations

import json
import threading

import pytest

from cards.ledger import DEMO_LEDGER_KEY, PSEUDONYM_PREFIX, head_tag
from cards.orders import PlanLedger
from cards.plan import (
    BindEvent,
    BindingRefusedError,
    InvalidEventError,
    OrderConflictError,
    OrderEvent,
    PlanConfig,
    refusal_from_stored,
    replay,
)
from cards.plan_store import APPLIED, LOG_EVENTS, LOG_LEDGER, Outcome
from cards.share import Shares
from models.errors import ConflictError
from store import Batch, Store
from tests.cards.support import DAY, T0, Clock, credits, make_ledger, order


def _team(ledger: PlanLedger, shares: Shares, clock: Clock) -> dict[str, str]:
    """boss B (made by the "+1"), agents A1..A3 under it; returns each user's share code."""
    codes = {u: shares.create(card_id="card-1", sharer_id=u).code
             for u in ("root", "B", "A1", "A2", "A3")}
    ledger.submit_bind("B", code=codes["root"])
    ledger.submit_order(order("o-B", "B", "completed"), ref_code=None)
    for n, agent in enumerate(("A1", "A2", "A3"), 1):
        ledger.submit_bind(agent, code=codes["B"])
        ledger.submit_order(order(f"o-{agent}", agent, "completed", ts=T0 + n), ref_code=None)
    return codes


def _replay_independently(store: Store) -> dict[tuple[str, str, str], int]:
    """Replay the stored event log with the engine's own `replay` (not our applier)."""
    events: list[OrderEvent | BindEvent] = []
    for _, doc in store.read_log(LOG_EVENTS, limit=100_000):
        if doc["type"] == "bind":
            events.append(BindEvent.model_validate(doc))
        else:
            events.append(OrderEvent.model_validate(doc["order"]))
    drafts, _ = replay(events, config=PlanConfig())
    return credits([d.model_dump(mode="json") for d in drafts])


def test_events_are_applied_into_one_hash_chained_ledger(store: Store) -> None:
    clock = Clock()
    ledger, shares = make_ledger(store, clock)
    _team(ledger, shares, clock)
    view = ledger.referrals("B")
    assert view.role == "boss" and view.team == ["A3"]
    rows = ledger.ledger_rows()
    assert rows, "the +1 and the agents' orders pay the referrers"
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert ledger.verify().ok
    assert ledger.cursor().events == store.log_length(LOG_EVENTS)


def test_ledger_and_graph_hold_pseudonyms_never_user_ids(store: Store) -> None:
    clock = Clock()
    ledger, shares = make_ledger(store, clock)
    _team(ledger, shares, clock)
    text = json.dumps([r for _, r in store.read_log(LOG_LEDGER, limit=1000)])
    text += json.dumps([r for _, r in store.read_log(LOG_EVENTS, limit=1000)])
    for user in ("root", "A1", "A2", "A3"):
        assert f'"{user}"' not in text
    assert PSEUDONYM_PREFIX in text
    # ... while the views speak in user ids.
    assert ledger.referrals("A1").referrer == "B"
    assert all(e.path[-1] == "B" for e in ledger.rewards("B").entries)


def test_repeated_event_changes_nothing(store: Store) -> None:
    clock = Clock()
    ledger, shares = make_ledger(store, clock)
    _team(ledger, shares, clock)
    before = ledger.ledger_rows()
    again = ledger.submit_order(order("o-A1", "A1", "completed", ts=T0 + 1), ref_code=None)
    assert again.duplicate
    assert ledger.ledger_rows() == before


def test_crash_between_accept_and_apply_loses_nothing(store: Store) -> None:
    clock = Clock()
    ledger, shares = make_ledger(store, clock)
    _team(ledger, shares, clock)
    ledger.submit_bind("m1", code=shares.create(card_id="card-1", sharer_id="A1").code)
    accepted = ledger.submit_order(order("o-m1", "m1", "completed"), ref_code=None, apply=False)
    assert accepted.outcome is None and ledger.pending() == 1
    # The process died here. Another process (a fresh ledger object) catches up.
    other, _ = make_ledger(store, clock)
    assert other.catch_up() == 1
    assert other.outcome(accepted.event_id) is not None
    assert any(e.order_id == "o-m1" for e in other.rewards("A1").entries)
    assert other.verify().ok


def test_racing_appliers_commit_every_event_exactly_once(store: Store) -> None:
    """Appliers that ignore the lock (as if it expired) still write each entry once."""
    clock = Clock()
    ledger, shares = make_ledger(store, clock)
    codes = _team(ledger, shares, clock)
    for n in range(30):
        ledger.submit_bind(f"m{n}", code=codes[("A1", "A2", "A3")[n % 3]])
        ledger.submit_order(order(f"o{n}", f"m{n}", "completed", ts=T0 + 10 + n),
                            ref_code=None, apply=False)
    appliers = [make_ledger(store, clock)[0] for _ in range(4)]

    def run(applier: PlanLedger) -> None:
        while applier._apply_round():  # no lock on purpose
            pass

    threads = [threading.Thread(target=run, args=(a,)) for a in appliers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.pending() == 0
    rows = ledger.ledger_rows()
    assert ledger.verify().ok
    assert credits(rows) == _replay_independently(store)
    assert ledger.rebuild().identical


def test_rebuild_replays_to_identical_balances(store: Store) -> None:
    clock = Clock()
    ledger, shares = make_ledger(store, clock)
    codes = _team(ledger, shares, clock)
    ledger.submit_bind("m1", code=codes["A1"])
    ledger.submit_order(order("o-m1", "m1", "paid"), ref_code=None)
    ledger.submit_order(order("o-m1", "m1", "completed", ineligible=500), ref_code=None)
    ledger.submit_order(order("o-m1", "m1", "refunded", ineligible=500, refund=3_000),
                        ref_code=None)
    report = ledger.rebuild()
    assert report.identical and not report.entry_diffs
    assert report.stored_entries == report.rebuilt_entries > 0


def test_rebuild_uses_the_settings_each_event_arrived_with(store: Store) -> None:
    clock = Clock()
    ledger, shares = make_ledger(store, clock)
    _team(ledger, shares, clock)
    changed, _ = make_ledger(store, clock, config=PlanConfig(direct_bp=2500, team_bp=0))
    assert changed.rebuild().identical


def test_rebuild_finds_a_wrong_ledger_and_write_appends_corrections(store: Store) -> None:
    clock = Clock()
    ledger, shares = make_ledger(store, clock)
    _team(ledger, shares, clock)
    b = ledger.names.get("B")
    assert b is not None
    # An applier with a bug (it holds the ledger key) paid B 777 cents too much on o-A1.
    from cards.ledger import chain
    cur = ledger.cursor()
    bogus = chain([{"order_id": "o-A1", "beneficiary": b, "rule": "direct", "kind": "credit",
                    "amount_cents": 777, "rate_bp": 1000, "base_cents": 7770, "reason": "direct",
                    "path": [b], "completed_ts": T0, "ts": T0}],
                  prev_hash=cur.head, start_seq=cur.ledger + 1)
    store.commit(Batch(appends=[(LOG_LEDGER, bogus[0]), (f"plan.ben.{b}", bogus[0])],
                       puts=[("plan.meta", "cursor", {"events": cur.events,
                                                      "ledger": cur.ledger + 1,
                                                      "head": bogus[0]["hash"],
                                                      "tag": head_tag(key=DEMO_LEDGER_KEY,
                                                                      count=cur.ledger + 1,
                                                                      head=bogus[0]["hash"])})]))
    paid_before = ledger.rewards("B").balances
    report = ledger.rebuild()
    assert not report.identical and b in report.balance_diffs
    ledger.rebuild(write=True)
    after = ledger.rewards("B").balances
    assert after.pending_cents == paid_before.pending_cents - 777
    assert ledger.rebuild().identical
    assert ledger.verify().ok


def test_erasure_keeps_the_chain_and_unlinks_the_user(store: Store) -> None:
    clock = Clock()
    ledger, shares = make_ledger(store, clock)
    codes = _team(ledger, shares, clock)
    ledger.submit_bind("m1", code=codes["A3"])
    ledger.submit_order(order("o-m1", "m1", "completed"), ref_code=None)
    a3_before = ledger.rewards("A3")
    assert a3_before.entries
    assert ledger.erase_user("A3")
    assert ledger.rewards("A3").entries == []
    referrer = ledger.referrals("m1").referrer
    assert referrer is not None and referrer.startswith(PSEUDONYM_PREFIX)
    assert ledger.verify().ok
    assert ledger.rebuild().identical
    # The buyer is erased too; a later refund of its order still reverses B's team reward.
    assert any(e.rule == "team" and e.order_id == "o-m1"
               for e in ledger.rewards("B").entries)
    ledger.erase_user("m1")
    team_before = ledger.rewards("B").balances.pending_cents
    ledger.submit_order(order("o-m1", "m1", "refunded", refund=10_000), ref_code=None)
    assert ledger.rewards("B").balances.pending_cents < team_before
    assert ledger.verify().ok and ledger.rebuild().identical


def test_rewards_turn_payable_after_freeze_days(store: Store) -> None:
    clock = Clock(T0)
    ledger, shares = make_ledger(store, clock)
    _team(ledger, shares, clock)
    pending = ledger.rewards("B").balances
    assert pending.pending_cents > 0 and pending.payable_cents == 0
    clock.advance(7 * DAY + 10)
    payable = ledger.rewards("B").balances
    assert payable.model_dump() == {"pending_cents": 0, "payable_cents": pending.pending_cents}


@pytest.mark.parametrize(("code", "error"), [("cycle", BindingRefusedError),
                                             ("already_bound", BindingRefusedError),
                                             ("order_conflict", OrderConflictError),
                                             ("invalid_event", InvalidEventError)])
def test_a_stored_refusal_comes_back_as_its_typed_app_error(code: str, error: type) -> None:
    stored = Outcome.refused(refusal_from_stored(code, "why")).to_dict()
    assert stored == {"status": "refused", "code": code, "message": "why"}  # the stored shape
    outcome = Outcome.from_dict(stored)
    with pytest.raises(error) as err:
        outcome.raise_if_refused()
    assert isinstance(err.value, ConflictError) and err.value.code == code
    APPLIED.raise_if_refused()  # applied: nothing raised
