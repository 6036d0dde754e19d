"""Issue 12 point 5: bindings certain to be refused or to change nothing do not grow the log.

Under policy "first" a binding is final, so a user already bound has a fixed answer to any
later binding (the same referrer: a no-op success; another: refused "already_bound"), and
a referrer whose chain already holds the user is refused "cycle". `PlanLedger.submit_bind`
answers those from the applied state without appending to ``plan.events``; the answers
are the ones the apply path gives (checked against it: `apply=False` always appends).
"""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings
from cards.orders import PlanLedger, Submitted
from cards.plan_store import APPLIED, LOG_EVENTS, Outcome
from cards.share import Shares
from store import Store
from tests.app.cards_env import Env
from tests.app.test_orders_api import _env, bind, referral
from tests.cards.support import Clock, make_ledger

REPEATS = 1_000


def _code(shares: Shares, sharer: str) -> str:
    return shares.create(card_id="card-1", sharer_id=sharer).code


def _applied_answer(ledger: PlanLedger, user: str, code: str) -> Outcome | None:
    """What the apply path answers: the binding appended, then applied."""
    sub = ledger.submit_bind(user, code=code, apply=False)
    assert sub.event_id and sub.outcome is None
    ledger.catch_up()
    return ledger.outcome(sub.event_id)


def _same_answer(sub: Submitted, expected: Outcome | None) -> bool:
    return not sub.duplicate and sub.outcome == expected


def test_point5_repeated_binds_do_not_grow_the_event_log(store: Store) -> None:
    clock = Clock()
    ledger, shares = make_ledger(store, clock, policy="first")
    s1, s2 = _code(shares, "s1"), _code(shares, "s2")
    first = ledger.submit_bind("u", code=s1)
    assert first.event_id and first.outcome == APPLIED
    # The answers of the apply path, for the same and for another referrer.
    same = _applied_answer(ledger, "u", s1)
    other = _applied_answer(ledger, "u", s2)
    assert same == APPLIED
    assert other is not None and other.status == "refused" and other.code == "already_bound"
    length, cursor = store.log_length(LOG_EVENTS), ledger.cursor()
    view, rows = ledger.referrals("u"), ledger.ledger_rows()

    for n in range(REPEATS):
        clock.advance(1)
        assert _same_answer(ledger.submit_bind("u", code=s1), same), n
        assert _same_answer(ledger.submit_bind("u", code=s2), other), n

    assert store.log_length(LOG_EVENTS) == length
    assert ledger.cursor() == cursor and ledger.pending() == 0
    assert ledger.referrals("u") == view and view.referrer == "s1"
    assert ledger.referrals("s2").direct_referrals == []
    assert ledger.ledger_rows() == rows and ledger.verify().ok
    assert ledger.rebuild().identical
    # A sharer never seen before (no pseudonym yet) is refused the same way, and stays unseen.
    fresh = ledger.submit_bind("u", code=_code(shares, "s3"))
    assert fresh.outcome == other and store.log_length(LOG_EVENTS) == length
    assert ledger.names.get("s3") is None


def test_point5_repeated_cycle_binds_do_not_grow_the_event_log(store: Store) -> None:
    clock = Clock()
    ledger, shares = make_ledger(store, clock, policy="first")
    a, b, c = _code(shares, "a"), _code(shares, "b"), _code(shares, "c")
    ledger.submit_bind("b", code=a)
    ledger.submit_bind("c", code=b)
    via_c, via_b = _applied_answer(ledger, "a", c), _applied_answer(ledger, "a", b)
    for cycle in (via_c, via_b):
        assert cycle is not None and cycle.status == "refused" and cycle.code == "cycle"
    length = store.log_length(LOG_EVENTS)
    for n in range(100):
        assert _same_answer(ledger.submit_bind("a", code=c), via_c), n
        assert _same_answer(ledger.submit_bind("a", code=b), via_b), n
    assert store.log_length(LOG_EVENTS) == length
    assert ledger.referrals("a").referrer is None
    # The unbound user may still bind elsewhere: appended and applied as usual.
    ok = ledger.submit_bind("a", code=_code(shares, "x"))
    assert ok.event_id and ok.outcome == APPLIED
    assert store.log_length(LOG_EVENTS) == length + 1
    assert ledger.referrals("a").referrer == "x"


def test_point5_bind_answers_unchanged_under_last_policy(store: Store) -> None:
    clock = Clock()
    ledger, shares = make_ledger(store, clock, policy="last")
    s1, s2 = _code(shares, "s1"), _code(shares, "s2")
    ledger.submit_bind("u", code=s1)
    length = store.log_length(LOG_EVENTS)
    for n in range(50):
        clock.advance(1)
        sharer, code = ("s2", s2) if n % 2 == 0 else ("s1", s1)
        sub = ledger.submit_bind("u", code=code)
        assert sub.event_id and sub.outcome == APPLIED, n
        assert ledger.referrals("u").referrer == sharer
        # A repeat of the binding in force is appended too, as before.
        again = ledger.submit_bind("u", code=code)
        assert again.event_id and again.outcome == APPLIED
    assert store.log_length(LOG_EVENTS) == length + 100
    assert ledger.pending() == 0 and ledger.rebuild().identical


def test_point5_window_days_policy_still_appends(store: Store) -> None:
    clock = Clock()
    ledger, shares = make_ledger(store, clock, policy="window_days", window_days=3)
    s1, s2 = _code(shares, "s1"), _code(shares, "s2")
    ledger.submit_bind("u", code=s1)
    length = store.log_length(LOG_EVENTS)
    refused = ledger.submit_bind("u", code=s2)
    assert refused.event_id and refused.outcome is not None
    assert refused.outcome.code == "binding_window"
    assert store.log_length(LOG_EVENTS) == length + 1


def test_point5_backlog_is_appended_not_prechecked(store: Store) -> None:
    """While events wait to be applied the applied state may be stale: append as before."""
    clock = Clock()
    ledger, shares = make_ledger(store, clock, policy="first")
    s1, s2 = _code(shares, "s1"), _code(shares, "s2")
    ledger.submit_bind("u", code=s1)
    queued = ledger.submit_bind("v", code=s1, apply=False)
    assert ledger.pending() == 1
    length = store.log_length(LOG_EVENTS)
    sub = ledger.submit_bind("u", code=s2)
    assert sub.event_id and sub.outcome is not None and sub.outcome.code == "already_bound"
    assert store.log_length(LOG_EVENTS) == length + 1
    assert ledger.outcome(queued.event_id) == APPLIED


def test_point5_api_answers_unchanged_and_log_bounded(settings: Settings, tmp_path: Path) -> None:
    with _env(settings, tmp_path, referral_policy="first") as env:
        assert isinstance(env, Env)
        ledger = env.services.cards.ledger
        assert bind(env, "u", "s1").status_code == 200
        length = ledger.store.log_length(LOG_EVENTS)
        for _ in range(20):
            ok = bind(env, "u", "s1")
            assert ok.status_code == 200
            assert ok.json() == {"user_id": "u", "referrer": "s1", "policy": "first",
                                 "applied": True}
            r = bind(env, "u", "s2")
            assert r.status_code == 409 and r.json()["error"]["code"] == "already_bound"
        assert ledger.store.log_length(LOG_EVENTS) == length
        assert referral(env, "u")["referrer"] == "s1"
