"""What the plan answers over HTTP (`GET /v1/rewards`, `GET /v1/referrals/{id}`), as models.

They are the routes' `response_model`s, so the OpenAPI schema shows these shapes (CONTRACTS §7).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel

from cards.plan.config import PlanConfig
from cards.plan.records import LedgerDraft, Role, Rule, UserNode

EntryStatus = Literal["pending", "payable", "reversal", "withheld"]


class Balance(BaseModel):
    """A user's money from the plan: still frozen (pending) and free to pay out (payable)."""

    pending_cents: int = 0
    payable_cents: int = 0


class RewardEntry(BaseModel):
    """One ledger entry of the user, as `GET /v1/rewards` lists it."""

    order_id: str
    rule: Rule
    amount_cents: int
    status: EntryStatus
    reason: str
    path: list[str]
    rate_bp: int
    base_cents: int


class RewardsView(BaseModel):
    """Body of `GET /v1/rewards?user_id=U`."""

    entries: list[RewardEntry]
    balances: Balance


class ReferralView(BaseModel):
    """Body of `GET /v1/referrals/{user_id}`: a boss's `boss` is itself; `team` only a boss's."""

    role: Role
    referrer: str | None
    boss: str | None
    origin_boss: str | None
    direct_referrals: list[str]
    team: list[str]


def _draft(entry: LedgerDraft | Mapping[str, Any]) -> LedgerDraft:
    return entry if isinstance(entry, LedgerDraft) else LedgerDraft.model_validate(entry)


def entry_status(
    entry: LedgerDraft | Mapping[str, Any], *, now_ts: int, config: PlanConfig
) -> EntryStatus:
    """Return how an entry reads at `now_ts`: pending, payable, reversal or withheld."""
    draft = _draft(entry)
    if draft.kind == "withheld":
        return "withheld"
    if draft.kind == "reversal":
        return "reversal"
    frozen_until = draft.completed_ts + config.limits().freeze_s
    return "payable" if now_ts >= frozen_until else "pending"


def balances(
    entries: Iterable[LedgerDraft | Mapping[str, Any]], *, now_ts: int, config: PlanConfig
) -> dict[str, Balance]:
    """Return pending/payable cents per beneficiary at `now_ts`.

    Credits count in `pending` until `completed_ts + freeze_days` and in `payable` from then on.
    A reversal carries the `completed_ts` of the reward it reverses, so it always reduces the
    bucket its original credit sits in at `now_ts`: a refund of a still-frozen reward lowers
    `pending`, one of an already payable reward lowers `payable` (the reward was owed and is
    now clawed back from what can be paid). Since a reward's reversals never exceed it,
    neither bucket goes negative. Withheld entries count nowhere.
    """
    sums: dict[str, list[int]] = {}
    freeze = config.limits().freeze_s
    for raw in entries:
        draft = _draft(raw)
        if draft.kind == "withheld":
            continue
        bucket = sums.setdefault(draft.beneficiary, [0, 0])
        index = 1 if now_ts >= draft.completed_ts + freeze else 0
        bucket[index] += draft.amount_cents
    return {uid: Balance(pending_cents=p, payable_cents=q) for uid, (p, q) in sums.items()}


def rewards_view(
    entries: Iterable[LedgerDraft | Mapping[str, Any]],
    *,
    user_id: str,
    now_ts: int,
    config: PlanConfig,
) -> RewardsView:
    """Return the body of `GET /v1/rewards?user_id=U` from the ledger's entries."""
    mine = [d for d in (_draft(e) for e in entries) if d.beneficiary == user_id]
    balance = balances(mine, now_ts=now_ts, config=config).get(user_id, Balance())
    return RewardsView(
        entries=[
            RewardEntry(
                order_id=d.order_id,
                rule=d.rule,
                amount_cents=d.amount_cents,
                status=entry_status(d, now_ts=now_ts, config=config),
                reason=d.reason,
                path=list(d.path),
                rate_bp=d.rate_bp,
                base_cents=d.base_cents,
            )
            for d in mine
        ],
        balances=balance,
    )


def referral_view(node: UserNode) -> ReferralView:
    """Return the body of `GET /v1/referrals/{user_id}` for the user's node."""
    is_boss = node.role == "boss"
    return ReferralView(
        role=node.role,
        referrer=node.referrer,
        boss=node.user_id if is_boss else node.boss,
        origin_boss=node.origin_boss,
        direct_referrals=list(node.direct_referrals),
        team=list(node.team) if is_boss else [],
    )
