"""Routes of the orders surface: the mall's order webhook, bindings, rewards, referrals (§6-7)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.deps import ApiKey, CardsDep, IdentitiesDep
from cards.plan import BindPolicy, OrderEvent, OrderItem, ReferralView, RewardsView
from models.ids import Id

router = APIRouter(dependencies=[ApiKey], tags=["orders"])

Cents = Annotated[int, Field(ge=0, le=10**12, strict=True)]


class OrderItemIn(BaseModel):
    """One line of an order."""

    model_config = ConfigDict(extra="ignore")

    item_id: Id
    amount_cents: Cents
    reward_eligible: bool | None = True  # missing or null = true


class OrderIn(BaseModel):
    """Body of `POST /v1/orders` (the mall's order webhook)."""

    model_config = ConfigDict(extra="ignore")

    order_id: Id
    user_id: Id
    status: Literal["paid", "completed", "refunded"]
    amount_cents: Cents
    refund_cents: Cents | None = 0  # cumulative
    items: Annotated[list[OrderItemIn], Field(max_length=1000)] = Field(default_factory=list)
    ref_code: Annotated[str, Field(max_length=64)] | None = None
    ts: int | datetime | None = None  # Unix seconds or RFC 3339; missing = now

    @field_validator("ts")
    @classmethod
    def _sane_ts(cls, v: int | datetime | None) -> int | datetime | None:
        if isinstance(v, int) and not 0 <= v < 10**11:
            raise ValueError("ts must be Unix seconds")
        return v

    def to_event(self, now: float) -> OrderEvent:
        """Return the plan event (user ids still raw)."""
        if self.ts is None:
            ts = int(now)
        elif isinstance(self.ts, datetime):
            dt = self.ts if self.ts.tzinfo else self.ts.replace(tzinfo=UTC)
            ts = int(dt.timestamp())
        else:
            ts = self.ts
        return OrderEvent(
            order_id=self.order_id, user_id=self.user_id, status=self.status,
            amount_cents=self.amount_cents, refund_cents=self.refund_cents or 0, ts=ts,
            items=tuple(OrderItem(item_id=i.item_id, amount_cents=i.amount_cents,
                                  reward_eligible=i.reward_eligible is not False)
                        for i in self.items),
        )


class BindIn(BaseModel):
    """Body of `POST /v1/referrals/bind`."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id
    code: Annotated[str, Field(min_length=1, max_length=64)]


class OrderAccepted(BaseModel):
    """Answer of `POST /v1/orders`."""

    order_id: str
    status: Literal["paid", "completed", "refunded"]
    refund_cents: int
    duplicate: bool  # the same (order_id, status, refund_cents) came before: nothing changed
    applied: bool


class Bound(BaseModel):
    """Answer of `POST /v1/referrals/bind`."""

    user_id: str
    referrer: str | None
    policy: BindPolicy
    applied: bool


@router.post("/v1/orders", response_model=OrderAccepted)
def order_webhook(body: OrderIn, cards: CardsDep, identities: IdentitiesDep) -> OrderAccepted:
    """Accept an order event: idempotent per (order_id, status, refund_cents), applied now.

    422 (`invalid_order`) when its items sum to more than `amount_cents` or its `ts` is more
    than five minutes ahead of our clock; the freeze runs from when it was received here.
    """
    # The buyer is the person a linked id names (issue 15): one node in the plan.
    event = body.to_event(cards.clock())
    event = event.model_copy(update={"user_id": identities.canonical(event.user_id)})
    result = cards.submit_order(event, ref_code=body.ref_code)
    return OrderAccepted(
        order_id=body.order_id, status=body.status, refund_cents=result.refund_cents,
        duplicate=result.duplicate, applied=result.applied,
    )


@router.post("/v1/referrals/bind", response_model=Bound)
def bind(body: BindIn, cards: CardsDep, identities: IdentitiesDep) -> Bound:
    """Bind a newly registered user to the sharer of a code (policy and refusals: §6-7)."""
    person = identities.canonical(body.user_id)
    result = cards.bind(person, code=body.code)
    return Bound(user_id=person, referrer=result.referrer, policy=result.policy,
                 applied=result.applied)


@router.get("/v1/rewards", response_model=RewardsView)
def rewards(user_id: Annotated[str, Query(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")],
            cards: CardsDep, identities: IdentitiesDep) -> RewardsView:
    """Return the user's ledger entries and pending/payable balances."""
    return cards.rewards(identities.canonical(user_id))


@router.get("/v1/referrals/{user_id}", response_model=ReferralView)
def referrals(user_id: str, cards: CardsDep, identities: IdentitiesDep) -> ReferralView:
    """Return the user's role, referrer, boss, origin boss, direct referrals and team."""
    return cards.referral(identities.canonical(user_id))
