"""The 2+1 plan's rules (CONTRACTS §7) as a pure, deterministic state machine.

Nothing here does I/O or reads a clock: times come in with the events, records go through a
`PlanState` (the one write buffer, cards/plan/state.py), and the engine answers with
`LedgerDraft`s that the caller appends to the hash-chained ledger. A refusal is raised as the
typed error that names it (`BindingRefusedError`, `OrderConflictError`), checked before
anything changes.

Decisions taken where the contract leaves room (each one is also tested):

- A plan event binds its `referrer_id` (the resolved `ref_code`) on `paid` and `completed`
  events only, and only when the buyer has no referrer yet; a refused binding is ignored.
- When an agent becomes a boss (the "+1") it leaves its old boss's `team` list; the agents
  that slid into the old boss's team stay there.
- Slides are counted once, when a direct referral becomes an agent, against the referrer it
  has at that moment. A user bound after it became an agent never counts as a slide.
- An order's `amount_cents` is the one on its first event, replaced by the `completed` event's
  (rewards are computed from that event); the refund share uses it. Every event's
  `refund_cents` is read as the cumulative refund; the order keeps the highest one seen.
- A withheld reward whose beneficiary is not on the buyer's referrer chain gets the path
  `[buyer, beneficiary]` (there is no referral path to name).
- Freeze days run from when the `completed` event was received (`OrderEvent.received_ts`,
  stamped by the service's clock and stored with the event, so a replay agrees), not from its
  `ts`: a back-dated `ts` never skips the freeze (issue 12, overriding CONTRACTS §7). An event
  without `received_ts` (engine-level callers) uses its `ts`. A ledger entry's `completed_ts`
  is that start of the freeze.
- Settings are clamped in one place, `PlanConfig.limits()` (cards/plan/config.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import get_args

from cards.plan.config import BP_DENOMINATOR, DAY_S, PlanConfig
from cards.plan.errors import BindingRefusedError, OrderConflictError
from cards.plan.records import (
    BindEvent,
    BindPolicy,
    EntryKind,
    LedgerDraft,
    OrderEvent,
    OrderRecord,
    RewardRecord,
    Rule,
    UserNode,
)
from cards.plan.state import MemoryPlanState, PlanState
from cards.plan.views import ReferralView, referral_view

REASON_MAX_LEVELS = "compliance:max_levels"
REASON_MAX_TOTAL = "compliance:max_total"
REASON_REFUND = "refund"

_POLICIES: tuple[str, ...] = get_args(BindPolicy)


@dataclass(frozen=True)
class _Candidate:
    rule: Rule
    beneficiary: str
    rate_bp: int
    base_cents: int
    amount_cents: int

    @classmethod
    def at_rate(cls, rule: Rule, *, beneficiary: str, rate_bp: int, base_cents: int
                ) -> _Candidate:
        """Return the candidate paying rate_bp of base_cents (rounded down) to beneficiary."""
        return cls(rule, beneficiary, rate_bp, base_cents,
                   base_cents * rate_bp // BP_DENOMINATOR)


class PlanEngine:
    """Applies bindings and order events to the plan state and drafts the ledger entries."""

    def __init__(
        self,
        config: PlanConfig,
        state: PlanState,
        *,
        bind_policy: BindPolicy = "first",
        bind_window_days: int = 30,
    ) -> None:
        if bind_policy not in _POLICIES:
            raise ValueError(f"bind policy must be one of {', '.join(_POLICIES)}")
        self.config = config
        self.state = state
        self.bind_policy: BindPolicy = bind_policy
        self.bind_window_days = bind_window_days
        self._limits = config.limits()

    # ------------------------------------------------------------------ bindings

    def bind(
        self,
        user_id: str,
        referrer_id: str,
        *,
        ts: int,
        policy: BindPolicy | None = None,
        window_days: int | None = None,
    ) -> UserNode:
        """Bind `user_id` to `referrer_id` and return the user; raise BindingRefusedError if refused.

        `policy`/`window_days` default to the engine's. Binding again to the current
        referrer is a no-op that succeeds.
        """
        return self._bind(
            self.state,
            user_id=user_id,
            referrer_id=referrer_id,
            ts=ts,
            policy=policy or self.bind_policy,
            window_days=self.bind_window_days if window_days is None else window_days,
        )

    def _bind(
        self,
        state: PlanState,
        *,
        user_id: str,
        referrer_id: str,
        ts: int,
        policy: BindPolicy,
        window_days: int,
    ) -> UserNode:
        if policy not in _POLICIES:
            raise ValueError(f"unknown bind policy {policy!r}")
        if user_id == referrer_id:
            raise BindingRefusedError("self_referral", "a user cannot refer itself")
        user = state.user(user_id)
        if user.referrer == referrer_id:
            return user
        if user.referrer is not None:
            if policy == "first":
                raise BindingRefusedError(
                    "already_bound",
                    f"user is already bound to {user.referrer}; first binding is final",
                )
            if policy == "window_days":
                until = (user.bound_ts or 0) + max(0, window_days) * DAY_S
                if ts < until:
                    raise BindingRefusedError(
                        "binding_window",
                        f"user is bound to {user.referrer} until ts {until} ({window_days}-day window)",
                    )
        if user_id in self._ancestors(state, referrer_id, looking_for=[user_id]):
            raise BindingRefusedError(
                "cycle", f"{referrer_id} is already referred (in)directly by {user_id}"
            )
        referrer = state.user(referrer_id)
        if user.referrer is not None:
            previous = state.user(user.referrer)
            if user_id in previous.direct_referrals:
                previous.direct_referrals.remove(user_id)
            state.put_user(previous)
        user.referrer = referrer_id
        user.bound_ts = ts
        if user_id not in referrer.direct_referrals:
            referrer.direct_referrals.append(user_id)
        state.put_user(user)
        state.put_user(referrer)
        return user

    @staticmethod
    def _ancestors(state: PlanState, user_id: str, *, looking_for: Iterable[str]) -> list[str]:
        """Return `user_id` and its referrers upwards until every id in `looking_for` is met."""
        # Stops at the top, and on a repeated id should a corrupt store hold a cycle.
        chain = [user_id]
        seen = {user_id}
        missing = set(looking_for) - seen
        node = state.get_user(user_id)
        while missing and node is not None and node.referrer is not None:
            if node.referrer in seen:
                break
            chain.append(node.referrer)
            seen.add(node.referrer)
            missing.discard(node.referrer)
            node = state.get_user(node.referrer)
        return chain

    # ------------------------------------------------------------------ orders

    def apply_order_event(self, event: OrderEvent) -> list[LedgerDraft]:
        """Apply one order webhook event and return the ledger entries it adds (often none)."""
        state = self.state
        order = state.get_order(event.order_id)
        if order is not None and order.user_id != event.user_id:
            raise OrderConflictError(f"order {event.order_id} belongs to another user")
        key = f"{event.status}:{event.refund_cents}"
        if order is not None and key in order.seen:
            return []  # the first event per (order_id, status, refund_cents) wins
        if order is None:
            order = OrderRecord(
                order_id=event.order_id, user_id=event.user_id, amount_cents=event.amount_cents
            )
        order.seen.append(key)
        buyer = state.user(event.user_id)
        state.put_user(buyer)
        if event.referrer_id is not None and event.status != "refunded" and buyer.referrer is None:
            # An order's ref_code that cannot bind is ignored (CONTRACTS §7).
            with contextlib.suppress(BindingRefusedError):
                self._bind(
                    state,
                    user_id=buyer.user_id,
                    referrer_id=event.referrer_id,
                    ts=event.ts,
                    policy=self.bind_policy,
                    window_days=self.bind_window_days,
                )
        if event.status == "paid" and order.paid_ts is None:
            order.paid_ts = event.ts
        order.refund_cents = max(order.refund_cents, event.refund_cents)
        drafts: list[LedgerDraft] = []
        if event.status == "completed" and order.completed_ts is None:
            eligible = event.eligible_cents
            order.amount_cents = event.amount_cents
            # The freeze runs from receipt, not from the mall's (possibly back-dated) ts.
            order.completed_ts = event.effective_ts
            order.eligible_cents = eligible
            # Role and team changes come before this order's rewards.
            self._promote(state, buyer=buyer, eligible_cents=eligible, ts=event.ts)
            drafts.extend(self._rewards(state, order=order, buyer=buyer,
                                        completed_ts=order.completed_ts, ts=event.ts))
        if order.completed_ts is not None:
            drafts.extend(self._reversals(order, ts=event.ts))
        state.put_order(order)
        return drafts

    def _promote(self, state: PlanState, *, buyer: UserNode, eligible_cents: int, ts: int) -> None:
        if buyer.role != "member" or eligible_cents < self._limits.threshold_cents:
            return
        buyer.role = "agent"
        buyer.agent_ts = ts
        state.put_user(buyer)
        if buyer.referrer is None:
            return
        referrer = state.user(buyer.referrer)
        if referrer.role == "member":
            return  # became an agent under a member: no team, and no slide counted
        if referrer.role == "boss":
            self._join_team(state, agent=buyer, boss=referrer)
            return
        state.put_user(referrer)
        if referrer.slid_count < self._limits.slide_count:
            referrer.slid_count += 1  # slide: joins the referrer's boss's team, if any
            if referrer.boss is not None:
                self._join_team(state, agent=buyer, boss=state.user(referrer.boss))
            return
        # The "+1": the referrer becomes a boss, its origin the boss it belonged to.
        old_boss_id = referrer.boss
        referrer.role = "boss"
        referrer.boss_ts = ts
        referrer.origin_boss = old_boss_id
        referrer.boss = referrer.user_id
        if old_boss_id is not None:
            old_boss = state.user(old_boss_id)
            if referrer.user_id in old_boss.team:
                old_boss.team.remove(referrer.user_id)
            state.put_user(old_boss)
        self._join_team(state, agent=buyer, boss=referrer)

    @staticmethod
    def _join_team(state: PlanState, *, agent: UserNode, boss: UserNode) -> None:
        agent.boss = boss.user_id
        if agent.user_id not in boss.team:
            boss.team.append(agent.user_id)
        state.put_user(agent)
        state.put_user(boss)

    def _candidates(self, state: PlanState, *, buyer: UserNode, eligible: int) -> list[_Candidate]:
        limits = self._limits
        found: list[_Candidate] = []
        if buyer.referrer is not None:
            referrer = state.get_user(buyer.referrer)
            if referrer is not None and referrer.role != "member":
                found.append(_Candidate.at_rate("direct", beneficiary=referrer.user_id,
                                                rate_bp=limits.direct_bp, base_cents=eligible))
        # Only an agent buyer in a team yields team and peer rewards (not members, not bosses).
        if buyer.role == "agent" and buyer.boss is not None and buyer.boss != buyer.user_id:
            team = _Candidate.at_rate("team", beneficiary=buyer.boss, rate_bp=limits.team_bp,
                                      base_cents=eligible)
            found.append(team)
            boss = state.get_user(buyer.boss)
            if boss is not None and boss.origin_boss is not None:
                # The peer reward's base is the team amount before compliance cuts.
                found.append(_Candidate.at_rate("peer", beneficiary=boss.origin_boss,
                                                rate_bp=limits.peer_bp,
                                                base_cents=team.amount_cents))
        return [c for c in found if c.beneficiary != buyer.user_id]

    def _rewards(
        self, state: PlanState, *, order: OrderRecord, buyer: UserNode, completed_ts: int,
        ts: int,
    ) -> list[LedgerDraft]:
        eligible = order.eligible_cents or 0
        candidates = self._candidates(state, buyer=buyer, eligible=eligible)
        chain = self._ancestors(
            state, buyer.user_id, looking_for=[c.beneficiary for c in candidates]
        )
        cap = eligible * self._limits.max_total_bp // BP_DENOMINATOR
        credited_total = 0
        drafts: list[LedgerDraft] = []

        def entry(c: _Candidate, kind: EntryKind, cents: int, reason: str, path: list[str]) -> None:
            drafts.append(
                LedgerDraft(
                    order_id=order.order_id,
                    beneficiary=c.beneficiary,
                    rule=c.rule,
                    kind=kind,
                    amount_cents=cents,
                    rate_bp=c.rate_bp,
                    base_cents=c.base_cents,
                    reason=reason,
                    path=tuple(path),
                    completed_ts=completed_ts,
                    ts=ts,
                )
            )

        for c in candidates:
            if c.amount_cents <= 0:
                continue  # never a 0-cent entry
            if c.beneficiary in chain:
                hops = chain.index(c.beneficiary)
                path = chain[: hops + 1]
            else:
                hops, path = -1, [buyer.user_id, c.beneficiary]
            # The level check comes first; a reward too far consumes none of the cap.
            if hops < 0 or hops > self._limits.max_levels:
                entry(c, "withheld", c.amount_cents, REASON_MAX_LEVELS, path)
                continue
            credit = max(0, min(c.amount_cents, cap - credited_total))
            if credit > 0:
                credited_total += credit
                entry(c, "credit", credit, c.rule, path)
                order.rewards.append(
                    RewardRecord(
                        beneficiary=c.beneficiary,
                        rule=c.rule,
                        rate_bp=c.rate_bp,
                        base_cents=c.base_cents,
                        credited_cents=credit,
                        reversed_cents=0,
                        path=path,
                    )
                )
            if c.amount_cents - credit > 0:
                entry(c, "withheld", c.amount_cents - credit, REASON_MAX_TOTAL, path)
        return drafts

    @staticmethod
    def _reversals(order: OrderRecord, *, ts: int) -> list[LedgerDraft]:
        if order.refund_cents <= 0 or order.completed_ts is None:
            return []
        amount = order.amount_cents
        share = Fraction(min(order.refund_cents, amount), amount) if amount > 0 else Fraction(1)
        drafts: list[LedgerDraft] = []
        for reward in order.rewards:
            target = reward.credited_cents * share.numerator // share.denominator
            delta = target - reward.reversed_cents
            if delta <= 0:
                continue  # a lower, late refund changes nothing
            reward.reversed_cents = target
            drafts.append(
                LedgerDraft(
                    order_id=order.order_id,
                    beneficiary=reward.beneficiary,
                    rule=reward.rule,
                    kind="reversal",
                    amount_cents=-delta,
                    rate_bp=reward.rate_bp,
                    base_cents=reward.base_cents,
                    reason=REASON_REFUND,
                    path=tuple(reward.path),
                    completed_ts=order.completed_ts,
                    ts=ts,
                )
            )
        return drafts

    # ------------------------------------------------------------------ views

    def referral_view(self, user_id: str) -> ReferralView:
        """Return the body of `GET /v1/referrals/{user_id}` (a user never seen reads as a member)."""
        return referral_view(self.state.get_user(user_id) or UserNode(user_id=user_id))


def replay(
    events: Iterable[OrderEvent | BindEvent],
    *,
    config: PlanConfig,
    bind_policy: BindPolicy = "first",
    bind_window_days: int = 30,
) -> tuple[list[LedgerDraft], MemoryPlanState]:
    """Return the drafts and final state of replaying stored events into a fresh state.

    Used by `mingpian ledger rebuild`; bindings refused on replay are skipped, as they were.
    """
    state = MemoryPlanState()
    engine = PlanEngine(config, state, bind_policy=bind_policy, bind_window_days=bind_window_days)
    drafts: list[LedgerDraft] = []
    for event in events:
        if isinstance(event, BindEvent):
            try:
                engine.bind(event.user_id, event.referrer_id, ts=event.ts)
            except BindingRefusedError:
                continue
        else:
            drafts.extend(engine.apply_order_event(event))
    return drafts, state
