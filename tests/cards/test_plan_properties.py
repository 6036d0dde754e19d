"""Property tests of the 2+1 plan over random graphs, hostile settings and messy order streams."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cards.plan import (
    DAY_S,
    BindEvent,
    BindingRefusedError,
    BindPolicy,
    LedgerDraft,
    MemoryPlanState,
    OrderEvent,
    OrderItem,
    OrderStatus,
    PlanConfig,
    PlanEngine,
    replay,
)

T0 = 1_764_000_000
ROLE_RANK = {"member": 0, "agent": 1, "boss": 2}
# Scenarios are deliberately big (whole referral trees and order streams); a loaded CI box
# must not turn their generation time into a failure.
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]
Op = BindEvent | OrderEvent


@dataclass(frozen=True)
class Scenario:
    config: PlanConfig
    policy: BindPolicy
    window_days: int
    ops: tuple[Op, ...]


# Typical values first (examples shrink towards the head of sampled_from), hostile ones after.
rates = st.sampled_from([1000, 500, 2000, 3000, 10_000, 0, -100]) | st.integers(-100, 10_000)
configs = st.builds(
    PlanConfig,
    agent_threshold_cents=st.sampled_from([1, 100, 5000, 0, -5]),
    slide_count=st.sampled_from([0, 1, 2, 3, -1]),
    direct_bp=rates,
    team_bp=rates,
    peer_bp=rates,
    max_levels=st.sampled_from([2, 10, 1, 3, 0, -1]),
    max_total_bp=st.sampled_from([3000, 9000, 1500, 10_000, 5000, 0, -1]),
    freeze_days=st.integers(-1, 10),
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    users = [f"u{i}" for i in range(draw(st.integers(2, 12)))]
    user = st.sampled_from(users)
    ops: list[Op] = []
    # A referral forest first (each user under an earlier one, or a root) so that orders meet
    # agents, slides and bosses: a full binary or ternary tree (slides then reach 3+ hops up),
    # or a random mix. Random rebinding attempts follow in the stream.
    fanout = draw(st.sampled_from([0, 2, 3]))
    for i, user_id in enumerate(users[1:], start=1):
        parent: str | None = None
        if fanout:
            parent = users[(i - 1) // fanout]
        else:
            shape = draw(st.sampled_from(["chain", "any", "root"]))
            if shape == "chain":
                parent = users[i - 1]
            elif shape == "any":
                parent = draw(st.sampled_from(users[:i]))
        if parent is not None:
            ops.append(BindEvent(user_id=user_id, referrer_id=parent, ts=T0 - DAY_S))
    # Then some users buy once, in a random order, to grow agents, slides and bosses.
    # Parents come before children in `users`; a shuffle instead makes slides count oddly.
    warm_order = draw(st.permutations(users)) if draw(st.booleans()) else users
    for buyer in [u for u in warm_order if draw(st.integers(0, 3))]:
        warm = (OrderItem(item_id="sku-w", amount_cents=draw(st.sampled_from([10_000, 999]))),)
        ops.append(
            OrderEvent(
                order_id=f"w-{buyer}",
                user_id=buyer,
                status="completed",
                amount_cents=warm[0].amount_cents,
                items=warm,
                ts=T0,
            )
        )
    orders: list[tuple[str, str, tuple[OrderItem, ...], int]] = []
    for i in range(draw(st.integers(1, 12))):
        items = tuple(
            OrderItem(item_id=f"sku-{j}", amount_cents=cents, reward_eligible=eligible)
            for j, (cents, eligible) in enumerate(
                draw(
                    st.lists(
                        st.tuples(
                            st.sampled_from([0, 1, 9, 999, 10_000, 12_345]),
                            st.booleans() | st.just(True),
                        ),
                        min_size=1,
                        max_size=3,
                    )
                )
            )
        )
        extra = draw(st.sampled_from([0, 0, 1, 999]))
        orders.append((f"o{i}", draw(user), items, sum(it.amount_cents for it in items) + extra))
    arrival = T0
    for _ in range(draw(st.integers(1, 40))):
        arrival += draw(st.sampled_from([0, 60, DAY_S, 3 * DAY_S]))
        what = draw(st.sampled_from(["bind", "event", "event", "event", "event", "repeat"]))
        if what == "repeat" and ops:
            ops.append(ops[draw(st.integers(0, len(ops) - 1))])
        elif what == "bind":
            ops.append(BindEvent(user_id=draw(user), referrer_id=draw(user), ts=arrival))
        else:
            order_id, buyer, items, amount = draw(st.sampled_from(orders))
            status: OrderStatus = draw(st.sampled_from(["paid", "completed", "refunded"]))
            refunds = [0, amount // 3, amount // 2, amount, amount + 50]
            if status != "refunded":
                refunds = [0, 0, 0, amount // 4]
            ops.append(
                OrderEvent(
                    order_id=order_id,
                    user_id=buyer,
                    status=status,
                    amount_cents=amount,
                    refund_cents=draw(st.sampled_from(refunds)),
                    items=items,
                    referrer_id=draw(st.none() | user),
                    # Event times need not follow arrival order.
                    ts=arrival - draw(st.sampled_from([0, 0, 3600, 2 * DAY_S])),
                )
            )
    return Scenario(
        config=draw(configs),
        policy=draw(st.sampled_from(["first", "window_days", "last"])),
        window_days=draw(st.integers(0, 5)),
        ops=tuple(ops),
    )


def chain_of(state: MemoryPlanState, user_id: str) -> list[str]:
    """The buyer's referrer chain read straight from the stored documents."""
    chain = [user_id]
    while True:
        referrer = state.users.get(chain[-1], {}).get("referrer")
        if referrer is None or referrer in chain:
            return chain
        chain.append(referrer)


def engine_for(scn: Scenario) -> tuple[PlanEngine, MemoryPlanState]:
    state = MemoryPlanState()
    engine = PlanEngine(scn.config, state, bind_policy=scn.policy, bind_window_days=scn.window_days)
    return engine, state


def apply(engine: PlanEngine, op: Op) -> list[LedgerDraft]:
    if isinstance(op, BindEvent):
        with contextlib.suppress(BindingRefusedError):
            engine.bind(op.user_id, op.referrer_id, ts=op.ts)
        return []
    return engine.apply_order_event(op)


def cap_for(config: PlanConfig, eligible: int) -> int:
    return eligible * min(max(config.max_total_bp, 0), 3000) // 10_000


@st.composite
def deep_scenarios(draw: st.DrawFn) -> Scenario:
    """A full binary or ternary referral tree where everybody buys, parents first, then more.

    With `slide_count = fanout - 1` every agent's last child is its "+1" and the others slide
    up, so team and peer beneficiaries sit 3 and more hops above buyers.
    """
    fanout = draw(st.sampled_from([2, 3]))
    users = [f"u{i}" for i in range(draw(st.integers(8, 24)))]
    ops: list[Op] = [
        BindEvent(user_id=u, referrer_id=users[(i - 1) // fanout], ts=T0 - DAY_S)
        for i, u in enumerate(users[1:], start=1)
    ]
    sku = (OrderItem(item_id="sku-w", amount_cents=10_000),)
    for i, u in enumerate(users):
        ops.append(
            OrderEvent(
                order_id=f"w-{u}",
                user_id=u,
                status="completed",
                amount_cents=10_000,
                items=sku,
                ts=T0 + i,
            )
        )
    for k in range(draw(st.integers(0, 12))):
        buyer = draw(st.sampled_from(users))
        cents = draw(st.sampled_from([10_000, 999, 1]))
        items = (OrderItem(item_id="sku", amount_cents=cents),)
        steps: list[tuple[OrderStatus, int]] = [
            ("completed", 0),
            ("refunded", draw(st.integers(0, cents + 1))),
        ]
        for status, refund in steps:
            ops.append(
                OrderEvent(
                    order_id=f"r{k}",
                    user_id=buyer,
                    status=status,
                    amount_cents=cents,
                    refund_cents=refund,
                    items=items,
                    ts=T0 + DAY_S + k,
                )
            )
    slide_count = draw(st.sampled_from([fanout - 1, fanout - 1, 0, 1, 2]))
    return Scenario(
        config=draw(configs).model_copy(update={
            "slide_count": slide_count,
            # Mostly settings that would let a deep beneficiary through if the clamp failed.
            "max_levels": draw(st.sampled_from([10, 3, 2, 1, 0])),
        }),
        policy="first",
        window_days=30,
        ops=tuple(ops),
    )


@settings(max_examples=500, deadline=None, suppress_health_check=SLOW_OK)
@given(scenarios())
def test_property_compliance_roles_and_teams_hold_for_every_order(scn: Scenario) -> None:
    check_stream(scn)


@settings(max_examples=500, deadline=None, suppress_health_check=SLOW_OK)
@given(deep_scenarios())
def test_property_compliance_roles_and_teams_hold_in_deep_trees(scn: Scenario) -> None:
    check_stream(scn)


def check_stream(scn: Scenario) -> None:
    """Apply the stream, checking after every event what must always hold.

    Nobody beyond max_levels (never above 2) referrer hops is credited, the buyer never gets
    an entry, no entry is 0 cents, an order's credits stay under the cap; roles never go back,
    and at the end teams, bosses and direct referrals agree with each other.
    """
    engine, state = engine_for(scn)
    max_hops = min(max(scn.config.max_levels, 0), 2)
    eligible_of: dict[str, int] = {}
    credited: dict[str, int] = {}
    completed: set[str] = set()
    ranks: dict[str, int] = {}
    for op in scn.ops:
        drafts = apply(engine, op)
        for user_id, doc in state.users.items():
            rank = ROLE_RANK[doc["role"]]
            assert rank >= ranks.get(user_id, 0), "roles never go back"
            ranks[user_id] = rank
        if not isinstance(op, OrderEvent):
            continue
        chain = chain_of(state, op.user_id)  # referrer links at the time of the order
        if op.status == "completed" and op.order_id not in completed:
            completed.add(op.order_id)
            eligible_of[op.order_id] = sum(i.amount_cents for i in op.items if i.reward_eligible)
        for d in drafts:
            assert d.amount_cents != 0, "never a 0-cent entry"
            assert d.order_id == op.order_id
            assert d.beneficiary != op.user_id, "the buyer never earns from its own order"
            assert d.path[0] == op.user_id and d.path[-1] == d.beneficiary
            if d.kind == "credit":
                assert d.amount_cents > 0
                hops = chain.index(d.beneficiary) if d.beneficiary in chain else 99
                assert 1 <= hops <= max_hops <= 2, (d, chain)
                assert list(d.path) == chain[: hops + 1]
                credited[d.order_id] = credited.get(d.order_id, 0) + d.amount_cents
            elif d.kind == "withheld":
                assert d.amount_cents > 0
                assert d.reason in ("compliance:max_levels", "compliance:max_total")
            else:
                assert d.amount_cents < 0 and d.reason == "refund"
    for order_id, total in credited.items():
        assert total <= cap_for(scn.config, eligible_of[order_id])
    check_graph(state.users)


@settings(max_examples=500, deadline=None, suppress_health_check=SLOW_OK)
@given(scenarios() | deep_scenarios())
def test_property_reversals_match_final_refunded_share(scn: Scenario) -> None:
    engine, _ = engine_for(scn)
    drafts = [d for op in scn.ops for d in apply(engine, op)]
    rewards: dict[tuple[str, str, str], int] = {}
    reversed_: dict[tuple[str, str, str], int] = {}
    for d in drafts:
        key = (d.order_id, d.beneficiary, d.rule)
        if d.kind == "credit":
            assert key not in rewards, "one credit per reward: an order completes once"
            rewards[key] = d.amount_cents
        elif d.kind == "reversal":
            assert key in rewards, "only credited rewards are reversed, never withheld ones"
            reversed_[key] = reversed_.get(key, 0) + d.amount_cents
    refund: dict[str, int] = {}
    amount: dict[str, int] = {}
    for op in scn.ops:
        if isinstance(op, OrderEvent):
            refund[op.order_id] = max(refund.get(op.order_id, 0), op.refund_cents)
            amount[op.order_id] = op.amount_cents
    for reward_key, reward in rewards.items():
        order_id = reward_key[0]
        share = Fraction(min(refund[order_id], amount[order_id]), amount[order_id])
        assert reversed_.get(reward_key, 0) == -(reward * share.numerator // share.denominator)


@settings(max_examples=500, deadline=None, suppress_health_check=SLOW_OK)
@given(scenarios())
def test_property_replay_is_deterministic_and_repeats_change_nothing(scn: Scenario) -> None:
    engine, state = engine_for(scn)
    first = [d for op in scn.ops for d in apply(engine, op)]
    again, replayed = replay(
        scn.ops, config=scn.config, bind_policy=scn.policy, bind_window_days=scn.window_days
    )
    assert again == first
    assert (replayed.users, replayed.orders) == (state.users, state.orders)
    json.dumps([state.users, state.orders, [d.model_dump(mode="json") for d in first]])  # plain JSON
    for op in scn.ops:
        if isinstance(op, OrderEvent):
            assert engine.apply_order_event(op) == []  # every key was seen: first wins


def check_graph(users: dict[str, dict[str, object]]) -> None:
    """Every team member is an agent of that boss; every agent with a boss is in its team."""
    for user_id, doc in users.items():
        team = doc["team"]
        assert isinstance(team, Sequence)
        if doc["role"] == "boss":
            assert doc["boss"] == user_id
            for member in team:
                assert users[member]["role"] == "agent" and users[member]["boss"] == user_id
        else:
            assert list(team) == []
        if doc["role"] == "agent" and doc["boss"] is not None:
            boss = users[str(doc["boss"])]
            boss_team = boss["team"]
            assert isinstance(boss_team, Sequence)
            assert boss["role"] == "boss" and user_id in boss_team
        if doc["role"] == "member":
            assert doc["boss"] is None
        referrer = doc["referrer"]
        if referrer is not None:
            direct = users[str(referrer)]["direct_referrals"]
            assert isinstance(direct, Sequence) and user_id in direct
