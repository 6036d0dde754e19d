"""Orders, bindings, rewards and referrals over HTTP (CONTRACTS §6-7), both back-ends.

The engine's arithmetic is tested rule by rule in tests/cards/test_plan.py; these tests
name the same rules and check what the mall and the salespeople see through the API:
idempotency, arrival order, refunds, binding refusals and the exact response shapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from cards.plan import PlanConfig
from tests.app.cards_env import Env, running
from tests.cards.support import DAY, T0
from tests.conftest import make_settings

CARD = {"staff_id": "staff-1", "name": "王小明", "provider_id": "sh-01"}


@pytest.fixture
def env(settings: Settings) -> Iterator[Env]:
    with running(settings) as e:
        yield e


def _env(settings: Settings, tmp_path: Path, **overrides: Any) -> Any:
    return running(make_settings(tmp_path / "custom", redis_url=settings.redis_url, **overrides))


def code_of(env: Env, sharer: str) -> str:
    card = env.post("/v1/cards", CARD).json()["id"]
    return str(env.post(f"/v1/cards/{card}/shares", {"sharer_id": sharer}).json()["code"])


def bind(env: Env, user: str, sharer: str) -> Any:
    return env.post("/v1/referrals/bind", {"user_id": user, "code": code_of(env, sharer)})


def send(env: Env, order_id: str, user: str, status: str, *, eligible: int = 10_000,
         fee: int = 0, refund: int = 0, ref_code: str | None = None, ts: int = T0) -> Any:
    items = [{"item_id": "sku-1", "amount_cents": eligible}]
    if fee:
        items.append({"item_id": "vip-fee", "amount_cents": fee, "reward_eligible": False})
    body = {"order_id": order_id, "user_id": user, "status": status,
            "amount_cents": eligible + fee, "refund_cents": refund, "items": items,
            "ref_code": ref_code, "ts": ts}
    r = env.post("/v1/orders", body)
    assert r.status_code == 200, r.text
    return r.json()


def complete(env: Env, order_id: str, user: str, **kw: Any) -> Any:
    return send(env, order_id, user, "completed", **kw)


def rewards(env: Env, user: str) -> dict[str, Any]:
    r = env.get("/v1/rewards", params={"user_id": user})
    assert r.status_code == 200
    return dict(r.json())


def referral(env: Env, user: str) -> dict[str, Any]:
    r = env.get(f"/v1/referrals/{user}")
    assert r.status_code == 200
    return dict(r.json())


def team(env: Env) -> None:
    """boss B (after its "+1") with A3 in its team; A1, A2 slid (B had no boss)."""
    bind(env, "B", "root")
    complete(env, "o-B", "B")
    for n, agent in enumerate(("A1", "A2", "A3"), 1):
        bind(env, agent, "B")
        complete(env, f"o-{agent}", agent, ts=T0 + n)


# --------------------------------------------------------------------------- shapes


def test_rewards_shape(env: Env) -> None:
    team(env)
    body = rewards(env, "B")
    assert set(body) == {"entries", "balances"}
    assert set(body["balances"]) == {"pending_cents", "payable_cents"}
    entry = body["entries"][0]
    assert {"order_id", "rule", "amount_cents", "status", "reason", "path"} <= set(entry)
    assert entry["rule"] in {"direct", "team", "peer"}
    assert entry["status"] in {"pending", "payable", "reversal", "withheld"}
    assert rewards(env, "nobody") == {"entries": [],
                                      "balances": {"pending_cents": 0, "payable_cents": 0}}


def test_referrals_shape(env: Env) -> None:
    team(env)
    boss = referral(env, "B")
    assert set(boss) == {"role", "referrer", "boss", "origin_boss", "direct_referrals", "team"}
    assert boss == {"role": "boss", "referrer": "root", "boss": "B", "origin_boss": None,
                    "direct_referrals": ["A1", "A2", "A3"], "team": ["A3"]}
    assert referral(env, "A3")["boss"] == "B" and referral(env, "A3")["team"] == []
    assert referral(env, "stranger") == {"role": "member", "referrer": None, "boss": None,
                                         "origin_boss": None, "direct_referrals": [], "team": []}


def test_rewards_need_a_valid_user_id_and_a_key(env: Env) -> None:
    assert env.get("/v1/rewards").status_code == 422
    assert env.get("/v1/rewards", params={"user_id": "a b"}).status_code == 422
    assert env.client.get("/v1/rewards", params={"user_id": "B"}).status_code == 401


# --------------------------------------------------------------------------- rule 1


def test_rule_1_referrer_is_the_sharer_bound_by_bind(env: Env) -> None:
    r = bind(env, "u-2", "u-1")
    assert r.status_code == 200 and r.json()["referrer"] == "u-1"
    assert referral(env, "u-2")["referrer"] == "u-1"
    assert referral(env, "u-1")["direct_referrals"] == ["u-2"]


def test_rule_1_ref_code_binds_an_unbound_buyer_on_paid(env: Env) -> None:
    send(env, "o1", "buyer", "paid", ref_code=code_of(env, "u-1"))
    assert referral(env, "buyer")["referrer"] == "u-1"


def test_rule_1_ref_code_of_a_bound_buyer_or_unknown_code_is_ignored(env: Env) -> None:
    bind(env, "buyer", "u-1")
    send(env, "o1", "buyer", "paid", ref_code=code_of(env, "u-9"))
    send(env, "o2", "other", "paid", ref_code="AAAAAAAAAAAAAAAAAAAAAA")
    assert referral(env, "buyer")["referrer"] == "u-1"
    assert referral(env, "other")["referrer"] is None


def test_rule_1_bindings_never_change_the_past(env: Env) -> None:
    team(env)
    complete(env, "o-x", "x")  # x buys unbound: nobody earns
    bind(env, "x", "A3")
    assert all(e["order_id"] != "o-x" for e in rewards(env, "A3")["entries"])


# --------------------------------------------------------------------------- binding refusals


def test_rule_1_self_referral_is_refused(env: Env) -> None:
    r = bind(env, "u-1", "u-1")
    assert r.status_code == 409 and r.json()["error"]["code"] == "self_referral"


def test_rule_1_cycles_are_refused(env: Env) -> None:
    bind(env, "b", "a")
    bind(env, "c", "b")
    r = bind(env, "a", "c")
    assert r.status_code == 409 and r.json()["error"]["code"] == "cycle"
    assert referral(env, "a")["referrer"] is None


def test_unknown_code_is_404_and_invalid_user_is_422(env: Env) -> None:
    r = env.post("/v1/referrals/bind", {"user_id": "u", "code": "AAAAAAAAAAAAAAAAAAAAAA"})
    assert r.status_code == 404
    r = env.post("/v1/referrals/bind", {"user_id": "not valid!", "code": code_of(env, "s")})
    assert r.status_code == 422


def test_policy_first_binding_is_final(env: Env) -> None:
    bind(env, "u", "s1")
    r = bind(env, "u", "s2")
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_bound"
    assert bind(env, "u", "s1").status_code == 200  # the same binding again is fine
    assert referral(env, "u")["referrer"] == "s1"


def test_policy_window_days_rebinds_after_the_window(settings: Settings, tmp_path: Path) -> None:
    with _env(settings, tmp_path, referral_policy="window_days", referral_window_days=3) as env:
        bind(env, "u", "s1")
        r = bind(env, "u", "s2")
        assert r.status_code == 409 and r.json()["error"]["code"] == "binding_window"
        env.clock.advance(3 * DAY)
        assert bind(env, "u", "s2").status_code == 200
        assert referral(env, "u")["referrer"] == "s2"


def test_policy_last_sharer_wins(settings: Settings, tmp_path: Path) -> None:
    with _env(settings, tmp_path, referral_policy="last") as env:
        bind(env, "u", "s1")
        assert bind(env, "u", "s2").status_code == 200
        assert referral(env, "u")["referrer"] == "s2"
        assert referral(env, "s1")["direct_referrals"] == []


# --------------------------------------------------------------------------- rules 2-6


def test_rule_3_a_new_agent_joins_its_referrers_boss_team(env: Env) -> None:
    team(env)
    bind(env, "x", "B")  # referred by the boss itself
    complete(env, "o-x", "x")
    assert referral(env, "x")["boss"] == "B" and "x" in referral(env, "B")["team"]
    bind(env, "y", "A3")  # referred by an agent of B's team: slides into B's team
    complete(env, "o-y", "y")
    assert referral(env, "y")["boss"] == "B"


def test_rule_4_slide_then_the_plus_one_makes_a_boss_with_an_origin(env: Env) -> None:
    team(env)
    for n, user in enumerate(("s1", "s2", "s3")):
        bind(env, user, "A3")
        complete(env, f"o-{user}", user, ts=T0 + 10 + n)
    a3 = referral(env, "A3")
    assert (a3["role"], a3["boss"], a3["origin_boss"]) == ("boss", "A3", "B")
    assert a3["team"] == ["s3"]
    assert referral(env, "s1")["boss"] == referral(env, "s2")["boss"] == "B"
    assert "A3" not in referral(env, "B")["team"]


def test_rule_2_nobody_pays_to_join(env: Env) -> None:
    bind(env, "m", "s")
    complete(env, "o-fee", "m", eligible=0, fee=9_900)  # a membership fee only
    assert referral(env, "m")["role"] == "member"
    complete(env, "o-real", "m", eligible=100)
    assert referral(env, "m")["role"] == "agent"


def test_rule_5_direct_team_and_peer_rewards_via_http(env: Env) -> None:
    team(env)
    bind(env, "m", "A3")
    complete(env, "o-m", "m", eligible=10_000, fee=500)
    direct = [e for e in rewards(env, "A3")["entries"] if e["order_id"] == "o-m"]
    teamr = [e for e in rewards(env, "B")["entries"] if e["order_id"] == "o-m"]
    assert [(e["rule"], e["amount_cents"], e["path"]) for e in direct] == \
        [("direct", 1_000, ["m", "A3"])]
    assert [(e["rule"], e["amount_cents"], e["path"]) for e in teamr] == \
        [("team", 500, ["m", "A3", "B"])]
    assert rewards(env, "m")["entries"] == []  # the buyer never earns from its own order


def test_rule_6_withheld_amounts_are_listed_with_their_reason(settings: Settings,
                                                              tmp_path: Path) -> None:
    with _env(settings, tmp_path, plan=PlanConfig(max_total_bp=1200)) as env:
        team(env)
        bind(env, "m", "A3")
        complete(env, "o-m", "m")
        entries = [e for e in rewards(env, "B")["entries"] if e["order_id"] == "o-m"]
        assert [(e["status"], e["amount_cents"], e["reason"]) for e in entries] == [
            ("pending", 200, "team"), ("withheld", 300, "compliance:max_total")]
        assert rewards(env, "B")["balances"]["pending_cents"] == sum(
            e["amount_cents"] for e in rewards(env, "B")["entries"] if e["status"] == "pending")


# --------------------------------------------------------------------------- rule 7


def test_rule_7_pending_until_freeze_days_then_payable(env: Env) -> None:
    team(env)
    assert rewards(env, "B")["balances"]["payable_cents"] == 0
    env.clock.t = T0 + 7 * DAY + 5
    body = rewards(env, "B")
    assert body["balances"]["pending_cents"] == 0 and body["balances"]["payable_cents"] > 0
    assert {e["status"] for e in body["entries"]} == {"payable"}


def test_rule_7_partial_refunds_are_cumulative_reversals(env: Env) -> None:
    team(env)
    bind(env, "m", "A3")
    complete(env, "o-m", "m")
    send(env, "o-m", "m", "refunded", refund=2_500)
    send(env, "o-m", "m", "refunded", refund=5_000)  # cumulative: 50 % in all
    mine = [e for e in rewards(env, "A3")["entries"] if e["order_id"] == "o-m"]
    assert [(e["status"], e["amount_cents"]) for e in mine] == [
        ("pending", 1_000), ("reversal", -250), ("reversal", -250)]
    assert all(e["reason"] == "refund" for e in mine[1:])


def test_rule_7_refund_reverses_payable_rewards_too(env: Env) -> None:
    team(env)
    bind(env, "m", "A3")
    complete(env, "o-m", "m")
    env.clock.t = T0 + 8 * DAY
    before = rewards(env, "A3")["balances"]["payable_cents"]
    send(env, "o-m", "m", "refunded", refund=10_000, ts=T0 + 8 * DAY)
    assert rewards(env, "A3")["balances"]["payable_cents"] == before - 1_000


def test_rule_7_a_lower_late_refund_changes_nothing(env: Env) -> None:
    team(env)
    bind(env, "m", "A3")
    complete(env, "o-m", "m")
    send(env, "o-m", "m", "refunded", refund=5_000)
    before = rewards(env, "A3")
    send(env, "o-m", "m", "refunded", refund=2_000)
    assert rewards(env, "A3") == before


def test_rule_7_refund_before_completion_applies_on_completion(env: Env) -> None:
    team(env)
    bind(env, "m", "A3")
    send(env, "o-m", "m", "refunded", refund=4_000)
    assert not [e for e in rewards(env, "A3")["entries"] if e["order_id"] == "o-m"]
    complete(env, "o-m", "m")
    mine = [e["amount_cents"] for e in rewards(env, "A3")["entries"] if e["order_id"] == "o-m"]
    assert mine == [1_000, -400]


# --------------------------------------------------------------------------- rule 8 and idempotency


def test_rule_8_entries_name_order_rule_rate_base_and_path(env: Env) -> None:
    team(env)
    bind(env, "m", "A3")
    complete(env, "o-m", "m", eligible=12_345)
    [e] = [e for e in rewards(env, "A3")["entries"] if e["order_id"] == "o-m"]
    assert (e["rule"], e["rate_bp"], e["base_cents"], e["amount_cents"], e["path"]) == \
        ("direct", 1000, 12_345, 1_234, ["m", "A3"])
    assert env.services.cards.ledger.verify().ok


def test_idempotent_per_order_status_and_refund_cents(env: Env) -> None:
    team(env)
    bind(env, "m", "A3")
    first = complete(env, "o-m", "m")
    before = rewards(env, "A3")
    again = complete(env, "o-m", "m")
    assert first["duplicate"] is False and again["duplicate"] is True
    send(env, "o-m", "m", "refunded", refund=1_000)
    after_refund = rewards(env, "A3")
    assert send(env, "o-m", "m", "refunded", refund=1_000)["duplicate"] is True
    assert rewards(env, "A3") == after_refund != before


def test_completed_before_paid_is_applied_once(env: Env) -> None:
    team(env)
    bind(env, "m", "A3")
    complete(env, "o-m", "m")
    send(env, "o-m", "m", "paid")
    complete(env, "o-m", "m", ts=T0 + 99)  # a replay hours later
    mine = [e for e in rewards(env, "A3")["entries"] if e["order_id"] == "o-m"]
    assert [e["amount_cents"] for e in mine] == [1_000]


def test_an_order_completes_at_most_once(env: Env) -> None:
    team(env)
    bind(env, "m", "A3")
    complete(env, "o-m", "m", refund=0)
    complete(env, "o-m", "m", refund=1_000)  # another key; the order already completed
    mine = [e for e in rewards(env, "A3")["entries"] if e["order_id"] == "o-m"]
    assert [e["amount_cents"] for e in mine] == [1_000, -100]  # the refund counts, once


def test_order_id_of_another_buyer_is_a_conflict(env: Env) -> None:
    send(env, "o-1", "alice", "paid")
    r = env.post("/v1/orders", {"order_id": "o-1", "user_id": "bob", "status": "completed",
                                "amount_cents": 100, "ts": T0})
    assert r.status_code == 409 and r.json()["error"]["code"] == "order_conflict"


@pytest.mark.parametrize("bad", [
    {"status": "shipped"}, {"amount_cents": -1}, {"amount_cents": "100"},
    {"refund_cents": -5}, {"order_id": "has space"}, {"user_id": ""},
    {"items": [{"item_id": "x", "amount_cents": -1}]}, {"ts": -3},
])
def test_invalid_order_events_are_422(env: Env, bad: dict[str, Any]) -> None:
    body = {"order_id": "o", "user_id": "u", "status": "paid", "amount_cents": 100} | bad
    r = env.post("/v1/orders", body)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid"


def test_order_ts_may_be_rfc3339(env: Env) -> None:
    r = env.post("/v1/orders", {"order_id": "o", "user_id": "u", "status": "paid",
                                "amount_cents": 100, "ts": "2025-11-24T16:00:00Z"})
    assert r.status_code == 200


def test_erased_user_keeps_ledger_rows_pseudonymised(env: Env) -> None:
    team(env)
    bind(env, "m", "A3")
    complete(env, "o-m", "m")
    cards = env.services.cards
    assert cards is not None
    r = env.client.delete("/v1/users/A3", headers={"X-API-Key": "test-key"})
    assert r.status_code == 200 and "cards" in r.json()["erased"]
    assert rewards(env, "A3")["entries"] == []
    team_entry = next(e for e in rewards(env, "B")["entries"] if e["order_id"] == "o-m")
    assert team_entry["path"][0] == "m" and team_entry["path"][1].startswith("anon:")
    assert cards.ledger.verify().ok and cards.ledger.rebuild().identical
