"""The 2+1 plan, rule by rule (CONTRACTS §7, rules 1-8 and every "precise reading").

Default settings unless a test says otherwise: direct 10 %, team 5 %, peer 20 % of the team
reward, at most 2 levels, at most 30 % of E in all, 7 frozen days.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from cards.ledger import chain, verify
from cards.plan import (
    DAY_S,
    REASON_MAX_LEVELS,
    REASON_MAX_TOTAL,
    BindingRefusedError,
    BindPolicy,
    LedgerDraft,
    MemoryPlanState,
    OrderConflictError,
    OrderEvent,
    OrderItem,
    OrderRecord,
    OrderStatus,
    PlanConfig,
    PlanEngine,
    Role,
    UserNode,
    balances,
    effective_max_levels,
    effective_max_total_bp,
    entry_status,
    rewards_view,
)

T0 = 1_764_000_000


# --------------------------------------------------------------------------- helpers


def make(config: PlanConfig | None = None, *, policy: BindPolicy = "first") -> PlanEngine:
    return PlanEngine(config or PlanConfig(), MemoryPlanState(), bind_policy=policy)


def event(
    order_id: str,
    user_id: str,
    status: OrderStatus,
    *,
    eligible: int = 10_000,
    ineligible: int = 0,
    amount: int | None = None,
    refund: int = 0,
    referrer: str | None = None,
    ts: int = T0,
) -> OrderEvent:
    items = [OrderItem(item_id="sku-1", amount_cents=eligible)]
    if ineligible:
        items.append(OrderItem(item_id="fee", amount_cents=ineligible, reward_eligible=False))
    return OrderEvent(
        order_id=order_id,
        user_id=user_id,
        status=status,
        amount_cents=eligible + ineligible if amount is None else amount,
        refund_cents=refund,
        items=tuple(items),
        referrer_id=referrer,
        ts=ts,
    )


def complete(
    engine: PlanEngine,
    order_id: str,
    user_id: str,
    *,
    eligible: int = 10_000,
    ineligible: int = 0,
    refund: int = 0,
    ts: int = T0,
) -> list[LedgerDraft]:
    return engine.apply_order_event(
        event(
            order_id,
            user_id,
            "completed",
            eligible=eligible,
            ineligible=ineligible,
            refund=refund,
            ts=ts,
        )
    )


def refund(
    engine: PlanEngine,
    order_id: str,
    user_id: str,
    cents: int,
    *,
    amount: int = 10_000,
    ts: int = T0,
) -> list[LedgerDraft]:
    return engine.apply_order_event(
        event(order_id, user_id, "refunded", eligible=amount, refund=cents, ts=ts)
    )


def amounts(drafts: Sequence[LedgerDraft], kind: str = "credit") -> dict[tuple[str, str], int]:
    """(beneficiary, rule) -> amount of the drafts of one kind."""
    out: dict[tuple[str, str], int] = {}
    for d in drafts:
        if d.kind == kind:
            out[d.beneficiary, d.rule] = out.get((d.beneficiary, d.rule), 0) + d.amount_cents
    return out


def node(engine: PlanEngine, user_id: str) -> UserNode:
    found = engine.state.get_user(user_id)
    assert found is not None
    return found


def seed(
    engine: PlanEngine,
    user_id: str,
    *,
    role: Role = "member",
    referrer: str | None = None,
    boss: str | None = None,
    origin: str | None = None,
) -> None:
    """Put a user straight into the state (parents first) for rules that need a ready graph."""
    engine.state.put_user(
        UserNode(
            user_id=user_id,
            role=role,
            referrer=referrer,
            bound_ts=T0 - DAY_S if referrer else None,
            boss=user_id if role == "boss" else boss,
            origin_boss=origin,
        )
    )
    if referrer is not None:
        parent = node(engine, referrer)
        parent.direct_referrals.append(user_id)
        engine.state.put_user(parent)
    if boss is not None and role == "agent":
        head = node(engine, boss)
        head.team.append(user_id)
        engine.state.put_user(head)


@dataclass
class Tree:
    """A plan grown through the engine only (no seeding), with every order's drafts.

    A buys first (agent, no team). B, C, D are A's referrals: B and C slide (A has no boss,
    so they get no team), D is the "+1": A becomes a boss with no origin, D joins A's team.
    F, G, H are D's referrals: F and G slide into A's team, H is D's "+1": D becomes a boss
    with origin A, H joins D's team. K is H's referral and slides into D's team.
    """

    engine: PlanEngine
    drafts: dict[str, list[LedgerDraft]] = field(default_factory=dict)
    ts: int = T0

    def bind(self, user_id: str, referrer_id: str) -> None:
        self.ts += 60
        self.engine.bind(user_id, referrer_id, ts=self.ts)

    def buy(self, order_id: str, user_id: str, **kw: int) -> list[LedgerDraft]:
        self.ts += 60
        self.drafts[order_id] = complete(self.engine, order_id, user_id, ts=self.ts, **kw)
        return self.drafts[order_id]


def grow(config: PlanConfig | None = None) -> Tree:
    tree = Tree(make(config))
    tree.buy("o-a", "A")
    for child in "BCD":
        tree.bind(child, "A")
    for child in "BCD":
        tree.buy(f"o-{child.lower()}", child)
    for child in "FGH":
        tree.bind(child, "D")
    for child in "FGH":
        tree.buy(f"o-{child.lower()}", child)
    tree.bind("K", "H")
    tree.buy("o-k", "K")
    return tree


# --------------------------------------------------------------------------- rule 1: referrer


def test_rule1_bound_referrer_earns_direct_reward() -> None:
    engine = make()
    complete(engine, "o-1", "A")
    engine.bind("B", "A", ts=T0)
    assert amounts(complete(engine, "o-2", "B")) == {("A", "direct"): 1000}


def test_rule1_ref_code_on_paid_binds_an_unbound_buyer() -> None:
    engine = make()
    complete(engine, "o-1", "A")
    assert engine.apply_order_event(event("o-2", "B", "paid", referrer="A")) == []
    assert engine.referral_view("B").referrer == "A"
    assert amounts(complete(engine, "o-2", "B")) == {("A", "direct"): 1000}


def test_rule1_ref_code_on_completed_binds_when_paid_never_came() -> None:
    engine = make()
    complete(engine, "o-1", "A")
    drafts = engine.apply_order_event(event("o-2", "B", "completed", referrer="A"))
    assert amounts(drafts) == {("A", "direct"): 1000}


def test_rule1_self_referral_is_refused() -> None:
    engine = make()
    with pytest.raises(BindingRefusedError) as err:
        engine.bind("A", "A", ts=T0)
    assert err.value.reason == "self_referral"
    assert engine.state.get_user("A") is None


@pytest.mark.parametrize("links", [[("B", "A")], [("B", "A"), ("C", "B")]])
def test_rule1_cycle_is_refused(links: list[tuple[str, str]]) -> None:
    engine = make(policy="last")
    for user, referrer in links:
        engine.bind(user, referrer, ts=T0)
    bottom = links[-1][0]
    with pytest.raises(BindingRefusedError) as err:
        engine.bind("A", bottom, ts=T0 + 1)
    assert err.value.reason == "cycle"
    assert node(engine, "A").referrer is None


def test_rule1_bindings_never_change_the_past() -> None:
    engine = make(policy="last")
    complete(engine, "o-0a", "A")
    complete(engine, "o-0c", "C")
    engine.bind("B", "A", ts=T0)
    first = complete(engine, "o-1", "B", ts=T0 + 10)
    record_before = engine.state.get_order("o-1")
    engine.bind("B", "C", ts=T0 + 20)
    assert engine.state.get_order("o-1") == record_before
    assert amounts(first) == {("A", "direct"): 1000}
    assert amounts(complete(engine, "o-2", "B", ts=T0 + 30)) == {("C", "direct"): 1000}


def test_rule1_policy_first_refuses_a_second_referrer() -> None:
    engine = make(policy="first")
    engine.bind("B", "A", ts=T0)
    engine.bind("B", "A", ts=T0 + 5)  # the same binding again is a harmless no-op
    with pytest.raises(BindingRefusedError) as err:
        engine.bind("B", "C", ts=T0 + 400 * DAY_S)
    assert err.value.reason == "already_bound"
    assert node(engine, "B").referrer == "A"


def test_rule1_policy_window_days_rebinds_only_after_the_window() -> None:
    engine = make(policy="window_days")
    engine.bind("B", "A", ts=T0)
    with pytest.raises(BindingRefusedError) as err:
        engine.bind("B", "C", ts=T0 + 30 * DAY_S - 1, window_days=30)
    assert err.value.reason == "binding_window"
    engine.bind("B", "C", ts=T0 + 30 * DAY_S, window_days=30)
    assert engine.referral_view("B").referrer == "C"
    assert engine.referral_view("A").direct_referrals == []
    assert engine.referral_view("C").direct_referrals == ["B"]


def test_rule1_policy_last_latest_sharer_wins() -> None:
    engine = make(policy="last")
    engine.bind("B", "A", ts=T0)
    engine.bind("B", "C", ts=T0 + 1)
    assert engine.referral_view("B").referrer == "C"


# --------------------------------------------------------------------------- rule 2: roles


def test_rule2_member_becomes_agent_when_an_order_completes() -> None:
    engine = make()
    engine.apply_order_event(event("o-1", "A", "paid"))
    assert engine.referral_view("A").role == "member"  # paid is not enough
    complete(engine, "o-1", "A")
    assert engine.referral_view("A").role == "agent"


def test_rule2_agent_threshold_on_eligible_amount() -> None:
    engine = make(PlanConfig(agent_threshold_cents=5000))
    complete(engine, "o-1", "A", eligible=4999)
    assert engine.referral_view("A").role == "member"
    complete(engine, "o-2", "A", eligible=5000)
    assert engine.referral_view("A").role == "agent"


def test_rule2_nobody_pays_to_join_ineligible_items_never_count() -> None:
    engine = make()
    complete(engine, "o-0", "A")
    engine.bind("B", "A", ts=T0)
    # A 99.00 membership fee alone: no promotion and no reward.
    drafts = complete(engine, "o-1", "B", eligible=0, ineligible=9900)
    assert drafts == []
    assert engine.referral_view("B").role == "member"


# --------------------------------------------------------------------------- rule 3: teams


def test_rule3_new_agent_joins_its_boss_referrers_team() -> None:
    tree = grow()
    tree.bind("E", "A")  # A is a boss: E joins A's own team
    tree.buy("o-e", "E")
    assert tree.engine.referral_view("E").boss == "A"
    assert "E" in tree.engine.referral_view("A").team


def test_rule3_new_agent_joins_the_team_of_its_referrers_boss() -> None:
    tree = grow()
    assert tree.engine.referral_view("F").boss == "A"  # F's referrer D was in A's team


def test_rule3_no_boss_means_no_team() -> None:
    tree = grow()
    assert tree.engine.referral_view("B").boss is None
    assert tree.engine.referral_view("A").boss == "A"  # became a boss later, B stays out
    assert "B" not in tree.engine.referral_view("A").team


# --------------------------------------------------------------------------- rule 4: slide


def test_rule4_slide_first_two_agents_join_referrers_boss_team() -> None:
    tree = grow()
    view_a = tree.engine.referral_view("A")
    assert view_a.team == ["F", "G"]  # D left when it became a boss
    assert tree.engine.referral_view("G").boss == "A"


def test_rule4_plus_one_makes_the_referrer_a_boss_with_origin() -> None:
    tree = grow()
    view_d = tree.engine.referral_view("D")
    assert view_d.role == "boss"
    assert view_d.boss == "D"
    assert view_d.origin_boss == "A"
    assert view_d.team == ["H", "K"]  # H is the "+1", K slid from H


def test_rule4_later_direct_agents_join_the_new_boss_team() -> None:
    tree = grow()
    tree.bind("J", "D")
    tree.buy("o-j", "J")
    assert tree.engine.referral_view("J").boss == "D"
    assert tree.engine.referral_view("D").team == ["H", "K", "J"]


# --------------------------------------------------------------------------- rule 5: rewards


def test_rule5_direct_team_and_peer_rewards() -> None:
    tree = grow()
    # H (agent in D's team, D's origin A): direct D 10 %, team D 5 %, peer A 20 % of 500.
    assert amounts(tree.drafts["o-h"]) == {
        ("D", "direct"): 1000,
        ("D", "team"): 500,
        ("A", "peer"): 100,
    }


def test_rule5_amounts_are_floored_to_the_cent() -> None:
    tree = grow()
    drafts = tree.buy("o-h2", "H", eligible=999)
    # 99.9 -> 99, 49.95 -> 49, 20 % of 49 = 9.8 -> 9
    assert amounts(drafts) == {("D", "direct"): 99, ("D", "team"): 49, ("A", "peer"): 9}


def test_rule5_buyer_never_earns_from_its_own_order() -> None:
    tree = grow()
    for order_id, drafts in tree.drafts.items():
        buyer = order_id[2:].upper()
        assert all(d.beneficiary != buyer for d in drafts), order_id


def test_rule5_rewards_are_computed_once_on_completion() -> None:
    engine = make()
    complete(engine, "o-0", "A")
    engine.bind("B", "A", ts=T0)
    assert engine.apply_order_event(event("o-1", "B", "paid")) == []
    assert amounts(complete(engine, "o-1", "B")) == {("A", "direct"): 1000}


# --------------------------------------------------------------------------- rule 6: compliance


def test_rule6_compliance_third_level_beneficiary_earns_nothing() -> None:
    tree = grow()
    # K -> H -> D -> A: direct H and team D are within 2 hops; A's peer is 3 hops up.
    drafts = tree.drafts["o-k"]
    assert amounts(drafts) == {("H", "direct"): 1000, ("D", "team"): 500}
    [withheld] = [d for d in drafts if d.kind == "withheld"]
    assert (withheld.beneficiary, withheld.rule, withheld.amount_cents) == ("A", "peer", 100)
    assert withheld.reason == REASON_MAX_LEVELS
    assert withheld.path == ("K", "H", "D", "A")


def test_rule6_compliance_max_levels_never_above_two() -> None:
    tree = grow(PlanConfig(max_levels=10))
    assert effective_max_levels(PlanConfig(max_levels=10)) == 2
    assert amounts(tree.drafts["o-k"], "withheld") == {("A", "peer"): 100}


def test_rule6_compliance_running_total_capped_later_rules_cut_first() -> None:
    tree = grow(PlanConfig(team_bp=3000))
    drafts = tree.buy("o-h2", "H")
    # cap 3000: direct 1000 fits, team 3000 gets 2000, peer (600) gets nothing.
    assert amounts(drafts) == {("D", "direct"): 1000, ("D", "team"): 2000}
    assert amounts(drafts, "withheld") == {("D", "team"): 1000, ("A", "peer"): 600}
    assert {d.reason for d in drafts if d.kind == "withheld"} == {REASON_MAX_TOTAL}


def test_rule6_compliance_max_total_never_above_3000_bp() -> None:
    engine = make(PlanConfig(direct_bp=5000, max_total_bp=9000))
    assert effective_max_total_bp(PlanConfig(max_total_bp=9000)) == 3000
    complete(engine, "o-0", "A")
    engine.bind("B", "A", ts=T0)
    drafts = complete(engine, "o-1", "B")
    assert amounts(drafts) == {("A", "direct"): 3000}
    assert amounts(drafts, "withheld") == {("A", "direct"): 2000}


def test_rule6_compliance_withheld_amounts_name_their_reason() -> None:
    engine = make(PlanConfig(max_levels=0))
    complete(engine, "o-0", "A")
    engine.bind("B", "A", ts=T0)
    [d] = complete(engine, "o-1", "B")
    assert (d.kind, d.beneficiary, d.amount_cents, d.reason) == (
        "withheld",
        "A",
        1000,
        REASON_MAX_LEVELS,
    )


def test_rule6_compliance_slid_links_are_counted() -> None:
    # With max_levels=1 the team reward of F (slid from D into A's team) is 2 hops away.
    tree = grow(PlanConfig(max_levels=1))
    assert amounts(tree.drafts["o-f"]) == {("D", "direct"): 1000}
    assert amounts(tree.drafts["o-f"], "withheld") == {("A", "team"): 500}


# --------------------------------------------------------------------------- rule 7: freeze, refunds


def test_rule7_reward_pending_until_freeze_days_then_payable() -> None:
    tree = grow()
    config = PlanConfig()
    credit = next(d for d in tree.drafts["o-h"] if d.kind == "credit")
    done = credit.completed_ts
    assert entry_status(credit, now_ts=done + 7 * DAY_S - 1, config=config) == "pending"
    assert entry_status(credit, now_ts=done + 7 * DAY_S, config=config) == "payable"


def test_rule7_refund_reverses_every_reward_by_the_refunded_share_floored() -> None:
    tree = grow()
    drafts = refund(tree.engine, "o-h", "H", 3333)
    # 33.33 %: 333.3 -> 333, 166.65 -> 166, 33.33 -> 33
    assert amounts(drafts, "reversal") == {
        ("D", "direct"): -333,
        ("D", "team"): -166,
        ("A", "peer"): -33,
    }
    assert all(d.reason == "refund" and d.amount_cents < 0 for d in drafts)


def test_rule7_refund_is_cumulative() -> None:
    tree = grow()
    refund(tree.engine, "o-h", "H", 3333)
    drafts = refund(tree.engine, "o-h", "H", 5000)
    # totals 500 / 250 / 50, minus what was already reversed (333 / 166 / 33)
    assert amounts(drafts, "reversal") == {
        ("D", "direct"): -167,
        ("D", "team"): -84,
        ("A", "peer"): -17,
    }


def test_rule7_refund_reverses_also_when_already_payable() -> None:
    tree = grow()
    config = PlanConfig()
    late = T0 + 30 * DAY_S
    reversals = refund(tree.engine, "o-h", "H", 10_000, ts=late)
    assert amounts(reversals, "reversal")[("D", "direct")] == -1000
    order_h = [*tree.drafts["o-h"], *reversals]
    assert balances(order_h, now_ts=late, config=config)["D"].payable_cents == 0


# --------------------------------------------------------------------------- rule 8: entries


def test_rule8_every_entry_names_order_beneficiary_rule_rate_base_path() -> None:
    tree = grow()
    [direct, team, peer] = tree.drafts["o-h"]
    assert (
        direct.order_id,
        direct.beneficiary,
        direct.rule,
        direct.rate_bp,
        direct.base_cents,
    ) == (
        "o-h",
        "D",
        "direct",
        1000,
        10_000,
    )
    assert direct.path == ("H", "D")
    assert (team.rule, team.rate_bp, team.base_cents, team.path) == (
        "team",
        500,
        10_000,
        ("H", "D"),
    )
    assert (peer.rule, peer.rate_bp, peer.base_cents, peer.path) == (
        "peer",
        2000,
        500,
        ("H", "D", "A"),
    )


def test_rule8_drafts_chain_into_a_verifiable_ledger() -> None:
    tree = grow()
    rows = chain([d.model_dump(mode="json") for drafts in tree.drafts.values() for d in drafts])
    assert verify(rows).ok
    rows[3]["amount_cents"] += 1
    assert verify(rows).first_bad_seq == 4


# --------------------------------------------------------------------------- precise readings


def test_reading_role_and_team_changes_apply_before_that_orders_rewards() -> None:
    tree = grow()
    # D's own order made A a boss (the "+1"), so A already earned the team reward on it.
    assert amounts(tree.drafts["o-d"]) == {("A", "direct"): 1000, ("A", "team"): 500}


def test_reading_roles_and_teams_never_go_back_after_refund() -> None:
    tree = grow()
    refund(tree.engine, "o-h", "H", 10_000)
    refund(tree.engine, "o-d", "D", 10_000)
    assert tree.engine.referral_view("H").role == "agent"
    assert tree.engine.referral_view("D").role == "boss"
    assert tree.engine.referral_view("D").team == ["H", "K"]


def test_reading_e_is_the_completed_events_eligible_items() -> None:
    engine = make()
    complete(engine, "o-0", "A")
    engine.bind("B", "A", ts=T0)
    engine.apply_order_event(event("o-1", "B", "paid", eligible=50_000))
    completed = OrderEvent.model_validate(
        {
            "order_id": "o-1",
            "user_id": "B",
            "status": "completed",
            "amount_cents": 12_000,
            "items": [
                {"item_id": "a", "amount_cents": 3000},  # missing reward_eligible = true
                {"item_id": "b", "amount_cents": 2000, "reward_eligible": True},
                {"item_id": "fee", "amount_cents": 7000, "reward_eligible": False},
            ],
            "ts": T0,
        }
    )
    assert amounts(engine.apply_order_event(completed)) == {("A", "direct"): 500}


def test_reading_threshold_applies_to_one_orders_e() -> None:
    engine = make(PlanConfig(agent_threshold_cents=5000))
    complete(engine, "o-1", "A", eligible=3000)
    complete(engine, "o-2", "A", eligible=3000)
    assert engine.referral_view("A").role == "member"


def test_reading_e_zero_never_promotes() -> None:
    engine = make(PlanConfig(agent_threshold_cents=0))
    complete(engine, "o-1", "A", eligible=0, ineligible=500)
    engine.apply_order_event(
        OrderEvent(order_id="o-2", user_id="A", status="completed", amount_cents=100, ts=T0)
    )
    assert engine.referral_view("A").role == "member"


def test_reading_slides_count_in_the_order_referrals_become_agents() -> None:
    engine = make()
    seed(engine, "Z", role="boss")
    seed(engine, "A", role="agent", referrer="Z", boss="Z")
    for child in "BCD":
        engine.bind(child, "A", ts=T0)
    for child in "DCB":  # D becomes an agent first, B last
        complete(engine, f"o-{child}", child)
    assert engine.referral_view("Z").team == ["D", "C"]
    assert engine.referral_view("A").team == ["B"]
    assert engine.referral_view("A").origin_boss == "Z"


def test_reading_orders_apply_in_arrival_order_not_ts_order() -> None:
    engine = make(PlanConfig(slide_count=1))
    complete(engine, "o-a", "A")
    engine.bind("B", "A", ts=T0)
    engine.bind("C", "A", ts=T0)
    complete(engine, "o-c", "C", ts=T0 + 200)
    complete(engine, "o-b", "B", ts=T0 + 100)  # earlier ts, later arrival: B is the "+1"
    assert engine.referral_view("A").team == ["B"]


def test_reading_referral_that_became_agent_under_a_member_referrer_does_not_count() -> None:
    engine = make()
    engine.bind("B", "A", ts=T0)
    assert complete(engine, "o-b", "B") == []  # A is a member: no entry at all
    complete(engine, "o-a", "A")
    for child in "CDE":
        engine.bind(child, "A", ts=T0)
    complete(engine, "o-c", "C")
    complete(engine, "o-d", "D")
    assert engine.referral_view("A").role == "agent"  # B did not count: C, D are the slides
    complete(engine, "o-e", "E")
    assert engine.referral_view("A").role == "boss"
    assert engine.referral_view("A").team == ["E"]
    assert engine.referral_view("B").boss is None


def test_reading_agent_with_no_boss_counts_slides_and_plus_one_has_no_origin() -> None:
    tree = grow()
    assert node(tree.engine, "A").slid_count == 2
    assert tree.engine.referral_view("C").boss is None  # slid, but to no team
    assert tree.engine.referral_view("A").origin_boss is None


def test_reading_slide_count_zero_makes_the_first_direct_agent_the_plus_one() -> None:
    engine = make(PlanConfig(slide_count=0))
    complete(engine, "o-a", "A")
    engine.bind("B", "A", ts=T0)
    drafts = complete(engine, "o-b", "B")
    assert engine.referral_view("A").role == "boss"
    assert engine.referral_view("A").team == ["B"]
    assert amounts(drafts) == {("A", "direct"): 1000, ("A", "team"): 500}


def test_reading_member_buyer_yields_only_direct() -> None:
    engine = make(PlanConfig(agent_threshold_cents=20_000))
    seed(engine, "Z", role="boss")
    seed(engine, "A", role="agent", referrer="Z", boss="Z")
    engine.bind("B", "A", ts=T0)
    assert amounts(complete(engine, "o-1", "B")) == {("A", "direct"): 1000}
    assert engine.referral_view("B").role == "member"


def test_reading_agent_with_no_boss_yields_only_direct() -> None:
    tree = grow()
    assert amounts(tree.drafts["o-b"]) == {("A", "direct"): 1000}
    assert amounts(tree.buy("o-b2", "B")) == {("A", "direct"): 1000}


def test_reading_boss_buyer_yields_only_direct() -> None:
    tree = grow()
    assert amounts(tree.buy("o-d2", "D")) == {("A", "direct"): 1000}


def test_reading_same_person_may_earn_direct_and_team() -> None:
    tree = grow()
    assert amounts(tree.buy("o-h2", "H"))[("D", "direct")] == 1000
    assert amounts(tree.drafts["o-h2"])[("D", "team")] == 500


def test_reading_member_referrer_earns_nothing_and_gets_no_entry() -> None:
    engine = make()
    seed(engine, "Z", role="boss")
    seed(engine, "A", referrer="Z")  # a member
    engine.bind("B", "A", ts=T0)
    drafts = complete(engine, "o-1", "B")
    assert [d for d in drafts if d.beneficiary == "A"] == []


def test_reading_binding_after_agent_gives_new_referrer_direct_but_team_is_fixed() -> None:
    tree = grow()
    tree.buy("o-x", "X")  # X becomes an agent with no referrer and no team
    tree.bind("X", "H")
    assert amounts(tree.buy("o-x2", "X")) == {("H", "direct"): 1000}
    assert tree.engine.referral_view("X").boss is None
    assert node(tree.engine, "H").slid_count == 1  # only K counted; X joined as an agent


def test_reading_rebinding_an_agent_keeps_its_team() -> None:
    tree = grow()
    tree.engine.bind("F", "C", ts=tree.ts + 1, policy="last")
    drafts = tree.buy("o-f2", "F")
    assert tree.engine.referral_view("F").boss == "A"
    # F -> C -> A: direct to the new referrer C, team still to A (2 hops).
    assert amounts(drafts) == {("C", "direct"): 1000, ("A", "team"): 500}


def test_reading_hops_are_referrer_links_at_order_time() -> None:
    engine = make(policy="last")
    seed(engine, "Z", role="boss")
    seed(engine, "Y", role="agent", referrer="Z", boss="Z")
    seed(engine, "X", role="agent", referrer="Y", boss="Z")
    first = complete(engine, "o-1", "X")
    assert amounts(first) == {("Y", "direct"): 1000, ("Z", "team"): 500}
    seed(engine, "W", role="agent")
    engine.bind("Y", "W", ts=T0 + 1)  # Z is no longer on X's referrer chain
    second = complete(engine, "o-2", "X")
    assert amounts(second) == {("Y", "direct"): 1000}
    [far] = [d for d in second if d.kind == "withheld"]
    assert (far.beneficiary, far.reason, far.path) == ("Z", REASON_MAX_LEVELS, ("X", "Z"))


def test_reading_beneficiary_not_on_the_referrer_chain_counts_as_too_far() -> None:
    engine = make()
    seed(engine, "Z", role="boss")
    seed(engine, "X", role="agent", boss="Z")  # in Z's team, but not referred by anyone
    drafts = complete(engine, "o-1", "X")
    assert amounts(drafts) == {}
    assert amounts(drafts, "withheld") == {("Z", "team"): 500}


def test_reading_max_levels_and_max_total_are_clamped() -> None:
    assert effective_max_levels(PlanConfig(max_levels=-3)) == 0
    assert effective_max_levels(PlanConfig(max_levels=5)) == 2
    assert effective_max_total_bp(PlanConfig(max_total_bp=-1)) == 0
    assert effective_max_total_bp(PlanConfig(max_total_bp=10_000)) == 3000
    engine = make(PlanConfig(max_total_bp=-1))
    complete(engine, "o-0", "A")
    engine.bind("B", "A", ts=T0)
    assert amounts(complete(engine, "o-1", "B"), "withheld") == {("A", "direct"): 1000}


def test_reading_cap_is_floor_of_e_times_max_total() -> None:
    engine = make(PlanConfig(direct_bp=3500))
    complete(engine, "o-0", "A")
    engine.bind("B", "A", ts=T0)
    drafts = complete(engine, "o-1", "B", eligible=999)
    # cap floor(299.7) = 299; direct floor(349.65) = 349 -> 299 credited, 50 withheld
    assert amounts(drafts) == {("A", "direct"): 299}
    assert amounts(drafts, "withheld") == {("A", "direct"): 50}


def test_reading_level_check_comes_first() -> None:
    # The direct reward fills the whole cap; the too-far team reward is withheld for levels.
    engine = make(PlanConfig(direct_bp=3000))
    seed(engine, "Z", role="boss")
    seed(engine, "Q", referrer="Z")
    seed(engine, "P", role="agent", referrer="Q", boss="Z")
    seed(engine, "X", role="agent", referrer="P", boss="Z")
    drafts = complete(engine, "o-1", "X")  # X -> P -> Q -> Z: Z is 3 hops up
    assert amounts(drafts) == {("P", "direct"): 3000}
    [team] = [d for d in drafts if d.rule == "team"]
    assert (team.kind, team.amount_cents, team.reason) == ("withheld", 500, REASON_MAX_LEVELS)


def test_reading_partial_cut_is_one_credited_and_one_withheld_entry() -> None:
    tree = grow(PlanConfig(team_bp=3000))
    team = [d for d in tree.buy("o-h2", "H") if d.rule == "team"]
    assert [(d.kind, d.amount_cents, d.reason) for d in team] == [
        ("credit", 2000, "team"),
        ("withheld", 1000, REASON_MAX_TOTAL),
    ]


def test_reading_peer_base_is_team_amount_before_cuts() -> None:
    tree = grow(PlanConfig(team_bp=2800, peer_bp=5000))
    drafts = tree.buy("o-h2", "H")
    # direct 1000, team 2800 cut to 2000; peer = 50 % of 2800 (not of 2000) = 1400, all cut.
    [peer] = [d for d in drafts if d.rule == "peer"]
    assert (peer.base_cents, peer.amount_cents, peer.kind) == (2800, 1400, "withheld")


def test_reading_peer_base_is_team_amount_before_level_cut() -> None:
    tree = grow(PlanConfig(max_levels=1))
    # H -> D -> A: team D (1 hop) credited 500; peer A (2 hops) withheld, base 500.
    [peer] = [d for d in tree.drafts["o-h"] if d.rule == "peer"]
    assert (peer.kind, peer.base_cents, peer.amount_cents) == ("withheld", 500, 100)


def test_reading_no_entry_is_ever_written_for_zero_cents() -> None:
    tree = grow(PlanConfig(peer_bp=0))
    assert [d for d in tree.buy("o-h2", "H", eligible=9) if d.amount_cents == 0] == []
    assert tree.drafts["o-h2"] == []  # 0.9, 0.45 -> nothing
    assert all(d.rule != "peer" for ds in tree.drafts.values() for d in ds)
    assert refund(tree.engine, "o-h2", "H", 1, amount=9) == []


def test_reading_withheld_listed_under_beneficiary_in_no_balance_never_reversed() -> None:
    tree = grow()
    config = PlanConfig()
    reversals = refund(tree.engine, "o-k", "K", 10_000)
    assert {d.beneficiary for d in reversals} == {"H", "D"}  # not A's withheld peer
    entries = [*tree.drafts["o-k"], *reversals]
    view = rewards_view(entries, user_id="A", now_ts=T0, config=config).model_dump()
    assert [(e["status"], e["amount_cents"], e["reason"]) for e in view["entries"]] == [
        ("withheld", 100, REASON_MAX_LEVELS),
    ]
    assert view["balances"] == {"pending_cents": 0, "payable_cents": 0}


def test_reading_freeze_runs_from_completed_ts_judged_when_read() -> None:
    engine = make(PlanConfig(freeze_days=2))
    complete(engine, "o-0", "A")
    engine.bind("B", "A", ts=T0)
    done = T0 + 5000
    [credit] = complete(engine, "o-1", "B", ts=done)
    config = engine.config
    assert balances([credit], now_ts=done + 2 * DAY_S - 1, config=config)["A"].pending_cents == 1000
    assert balances([credit], now_ts=done + 2 * DAY_S, config=config)["A"].payable_cents == 1000


def test_reading_reversal_reduces_the_bucket_of_its_original() -> None:
    tree = grow()
    config = PlanConfig()
    reversals = refund(tree.engine, "o-h", "H", 5000, ts=T0 + DAY_S)
    entries = [*tree.drafts["o-h"], *reversals]
    frozen = balances(entries, now_ts=T0 + DAY_S, config=config)
    assert frozen["D"].pending_cents == 750 and frozen["D"].payable_cents == 0
    later = balances(entries, now_ts=T0 + 8 * DAY_S, config=config)
    assert later["D"].pending_cents == 0 and later["D"].payable_cents == 750
    assert entry_status(reversals[0], now_ts=T0, config=config) == "reversal"


def test_reading_refund_share_is_min_refund_amount_over_amount() -> None:
    engine = make()
    complete(engine, "o-0", "A")
    engine.bind("B", "A", ts=T0)
    complete(engine, "o-1", "B", eligible=10_000, ineligible=10_000)  # amount 20000, E 10000
    assert amounts(refund(engine, "o-1", "B", 10_000, amount=20_000), "reversal") == {
        ("A", "direct"): -500
    }
    # more than the amount is a full refund, never more than the reward
    assert amounts(refund(engine, "o-1", "B", 99_999, amount=20_000), "reversal") == {
        ("A", "direct"): -500
    }


def test_reading_reversals_are_new_entries_for_the_difference() -> None:
    tree = grow()
    totals: dict[tuple[str, str], int] = {}
    for cents in (1000, 2500, 2500, 7001):
        for key, value in amounts(refund(tree.engine, "o-h", "H", cents), "reversal").items():
            totals[key] = totals.get(key, 0) + value
    # 70.01 % of 1000 / 500 / 100, floored
    assert totals == {("D", "direct"): -700, ("D", "team"): -350, ("A", "peer"): -70}


def test_reading_lower_late_refund_changes_nothing() -> None:
    tree = grow()
    refund(tree.engine, "o-h", "H", 5000)
    assert refund(tree.engine, "o-h", "H", 4000) == []


def test_reading_refund_before_completion_is_applied_on_completion() -> None:
    engine = make()
    complete(engine, "o-0", "A")
    engine.bind("B", "A", ts=T0)
    engine.apply_order_event(event("o-1", "B", "paid"))
    assert refund(engine, "o-1", "B", 2500) == []
    drafts = complete(engine, "o-1", "B")
    assert amounts(drafts) == {("A", "direct"): 1000}
    assert amounts(drafts, "reversal") == {("A", "direct"): -250}


def test_reading_first_event_wins_and_a_repeat_changes_nothing() -> None:
    tree = grow()
    state = tree.engine.state
    assert isinstance(state, MemoryPlanState)
    before = (dict(state.users), dict(state.orders))
    assert complete(tree.engine, "o-h", "H", ts=T0 + 999) == []
    assert (state.users, state.orders) == before
    refund(tree.engine, "o-h", "H", 5000)
    assert refund(tree.engine, "o-h", "H", 5000) == []


def test_reading_an_order_completes_at_most_once() -> None:
    tree = grow()
    again = complete(tree.engine, "o-h", "H", refund=1000)  # a new key, still no new reward
    assert amounts(again) == {}
    assert amounts(again, "reversal") == {
        ("D", "direct"): -100,
        ("D", "team"): -50,
        ("A", "peer"): -10,
    }


def test_reading_completed_before_paid_is_applied_once() -> None:
    engine = make()
    complete(engine, "o-0", "A")
    engine.bind("B", "A", ts=T0)
    first = complete(engine, "o-1", "B", ts=T0 + 10)
    assert amounts(first) == {("A", "direct"): 1000}
    assert engine.apply_order_event(event("o-1", "B", "paid", ts=T0 + 5)) == []
    assert complete(engine, "o-1", "B", ts=T0 + 10) == []
    record = engine.state.get_order("o-1")
    assert record is not None and record.paid_ts == T0 + 5


@pytest.mark.parametrize("policy", ["first", "window_days", "last"])
def test_reading_paid_ref_code_of_already_bound_buyer_is_ignored(policy: BindPolicy) -> None:
    engine = make(policy=policy)
    engine.bind("B", "A", ts=T0)
    engine.apply_order_event(event("o-1", "B", "paid", referrer="C", ts=T0 + 400 * DAY_S))
    assert engine.referral_view("B").referrer == "A"


def test_reading_paid_ref_code_refusals_are_ignored() -> None:
    engine = make()
    engine.apply_order_event(event("o-1", "A", "paid", referrer="A"))  # self
    assert engine.referral_view("A").referrer is None
    engine.bind("B", "A", ts=T0)
    engine.apply_order_event(event("o-2", "A", "paid", referrer="B"))  # cycle
    assert engine.referral_view("A").referrer is None


def test_reading_refused_binding_has_a_clear_reason() -> None:
    engine = make()
    engine.bind("B", "A", ts=T0)
    refusals = []
    for user, referrer in [("A", "A"), ("A", "B"), ("B", "C")]:
        with pytest.raises(BindingRefusedError) as err:
            engine.bind(user, referrer, ts=T0)
        refusals.append(err.value.reason)
        assert err.value.message
    assert refusals == ["self_referral", "cycle", "already_bound"]


def test_reading_path_runs_from_buyer_up_to_beneficiary() -> None:
    tree = grow()
    paths = {(d.beneficiary, d.rule): d.path for d in tree.drafts["o-k"]}
    assert paths == {
        ("H", "direct"): ("K", "H"),
        ("D", "team"): ("K", "H", "D"),
        ("A", "peer"): ("K", "H", "D", "A"),
    }


def test_reading_referral_view_boss_is_itself_direct_referrals_and_team() -> None:
    tree = grow()
    assert tree.engine.referral_view("A").model_dump() == {
        "role": "boss",
        "referrer": None,
        "boss": "A",
        "origin_boss": None,
        "direct_referrals": ["B", "C", "D"],
        "team": ["F", "G"],
    }
    assert tree.engine.referral_view("K").model_dump() == {
        "role": "agent",
        "referrer": "H",
        "boss": "D",
        "origin_boss": None,
        "direct_referrals": [],
        "team": [],
    }
    assert tree.engine.referral_view("nobody").role == "member"


# --------------------------------------------------------------------------- records and errors


def test_records_round_trip_through_json_dicts() -> None:
    tree = grow()
    state = tree.engine.state
    assert isinstance(state, MemoryPlanState)
    for data in state.users.values():
        assert UserNode.model_validate(data).model_dump(mode="json") == data
    for data in state.orders.values():
        assert OrderRecord.model_validate(data).model_dump(mode="json") == data
    for drafts in tree.drafts.values():
        for d in drafts:
            assert LedgerDraft.model_validate(d.model_dump(mode="json")) == d
    e = event("o-9", "B", "refunded", ineligible=5, refund=7, referrer="A")
    assert OrderEvent.model_validate(e.model_dump(mode="json")) == e


def test_event_for_another_buyer_is_a_conflict_and_changes_nothing() -> None:
    engine = make()
    engine.apply_order_event(event("o-1", "A", "paid"))
    with pytest.raises(OrderConflictError):
        complete(engine, "o-1", "B")
    assert engine.state.get_user("B") is None


@pytest.mark.parametrize(
    "bad",
    [
        {"status": "shipped"},
        {"amount_cents": -1},
        {"refund_cents": -5},
        {"items": [{"item_id": "x", "amount_cents": -1}]},
        {"ts": "yesterday"},
    ],
)
def test_malformed_events_are_rejected(bad: dict[str, object]) -> None:
    data: dict[str, object] = {
        "order_id": "o-1",
        "user_id": "A",
        "status": "paid",
        "amount_cents": 100,
        "ts": T0,
    }
    with pytest.raises(ValueError):
        OrderEvent.model_validate({**data, **bad})


# --------------------------------------------------------------------------- decisions where §7 leaves room


def test_decision_rates_are_clamped_to_0_10000_and_freeze_to_zero_days() -> None:
    engine = make(PlanConfig(direct_bp=-500, team_bp=20_000, freeze_days=-3))
    seed(engine, "Z", role="boss")
    seed(engine, "A", role="agent", referrer="Z", boss="Z")
    engine.bind("B", "A", ts=T0)
    drafts = complete(engine, "o-1", "B")
    # no negative direct reward; team 100 % of E, capped at 30 %
    assert amounts(drafts) == {("Z", "team"): 3000}
    assert amounts(drafts, "withheld") == {("Z", "team"): 7000}
    assert entry_status(drafts[0], now_ts=T0, config=engine.config) == "payable"


def test_decision_refund_share_uses_the_completed_events_amount() -> None:
    engine = make()
    complete(engine, "o-0", "A")
    engine.bind("B", "A", ts=T0)
    engine.apply_order_event(event("o-1", "B", "paid", eligible=10_000, amount=40_000))
    complete(engine, "o-1", "B", eligible=10_000)  # amount 10000 on completion
    assert amounts(refund(engine, "o-1", "B", 5000), "reversal") == {("A", "direct"): -500}


def test_decision_refunded_event_ref_code_does_not_bind() -> None:
    engine = make()
    engine.apply_order_event(event("o-1", "B", "refunded", refund=10, referrer="A"))
    assert engine.referral_view("B").referrer is None
