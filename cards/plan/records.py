"""What the plan stores and hands on, as pydantic models: the JSON documents are their dumps.

`model_dump(mode="json")` gives the shapes the hand-written codecs wrote before (same keys,
same values), so old documents parse and a `LedgerDraft`'s dump is exactly the ledger row the
hash chain covers (cards/ledger.py): never add, rename or drop one of its fields.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

Role = Literal["member", "agent", "boss"]
OrderStatus = Literal["paid", "completed", "refunded"]
Rule = Literal["direct", "team", "peer"]
EntryKind = Literal["credit", "withheld", "reversal"]
BindPolicy = Literal["first", "window_days", "last"]
JSONDict = dict[str, Any]

# Stored documents are JSON: a bool is never an integer and a number never a string.
Int = Annotated[int, Field(strict=True)]
Cents = Annotated[int, Field(strict=True, ge=0)]
Str = Annotated[str, Field(strict=True)]


class _Record(BaseModel):
    """A stored document: unknown keys (a newer writer's) are ignored."""

    model_config = ConfigDict(extra="ignore")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class UserNode(_Record):
    """One user in the referral graph (`plan.user/<name>`)."""

    user_id: Str
    role: Role = "member"
    referrer: Str | None = None
    bound_ts: Int | None = None
    # The boss whose team this agent belongs to (fixed at promotion); a boss's boss is itself.
    boss: Str | None = None
    origin_boss: Str | None = None
    # Direct referrals that became agents while this user was an agent and slid away.
    slid_count: Int = 0
    direct_referrals: list[Str] = Field(default_factory=list)
    team: list[Str] = Field(default_factory=list)
    agent_ts: Int | None = None
    boss_ts: Int | None = None


class RewardRecord(_Record):
    """A credited reward of an order, kept so that refunds can reverse it."""

    beneficiary: Str
    rule: Rule
    rate_bp: Int
    base_cents: Int
    credited_cents: Int
    reversed_cents: Int = 0
    path: list[Str] = Field(default_factory=list)


class OrderRecord(_Record):
    """What the plan remembers of one order (`plan.order/<id>`)."""

    order_id: Str
    user_id: Str
    amount_cents: Int
    refund_cents: Int = 0
    paid_ts: Int | None = None
    completed_ts: Int | None = None
    eligible_cents: Int | None = None
    # Idempotency keys "status:refund_cents" already applied, in arrival order.
    seen: list[Str] = Field(default_factory=list)
    rewards: list[RewardRecord] = Field(default_factory=list)


class OrderItem(_Frozen):
    """One line of an order; `reward_eligible: false` marks a fee or gift that never counts."""

    item_id: Str
    amount_cents: Cents
    reward_eligible: bool = True

    @field_validator("reward_eligible", mode="before")
    @classmethod
    def _missing_is_true(cls, value: object) -> bool:
        return True if value is None else bool(value)


class OrderEvent(_Frozen):
    """One mall order webhook event, its `ref_code` already resolved to `referrer_id`."""

    order_id: Str
    user_id: Str
    status: OrderStatus
    amount_cents: Cents
    refund_cents: Cents = 0
    items: tuple[OrderItem, ...] = ()
    referrer_id: Str | None = None
    ts: Int
    # When the service received the event (its clock, not the mall's `ts`): the freeze of a
    # `completed` event runs from here, so a back-dated `ts` cannot skip it (issue 12).
    received_ts: Int | None = None

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: object) -> object:
        # The mall may send `refund_cents: null` and `items: null`: read as 0 and none.
        if isinstance(data, dict):
            fixes = {k: v for k, v in (("refund_cents", 0), ("items", ())) if data.get(k) is None
                     and k in data}
            return {**data, **fixes} if fixes else data
        return data

    @model_serializer(mode="wrap")
    def _without_unknown_receipt(self, handler: SerializerFunctionWrapHandler) -> JSONDict:
        data: JSONDict = handler(self)
        if self.received_ts is None:
            data.pop("received_ts", None)  # events stored before issue 12 had no such key
        return data

    @property
    def eligible_cents(self) -> int:
        """Return E: the sum of this event's reward-eligible items."""
        return sum(item.amount_cents for item in self.items if item.reward_eligible)

    @property
    def items_cents(self) -> int:
        """Return the sum of all this event's items, eligible or not."""
        return sum(item.amount_cents for item in self.items)

    @property
    def effective_ts(self) -> int:
        """Return when the event counts as having happened for the freeze: its receipt time
        when known (events from the webhook), else its `ts` (engine-level callers)."""
        return self.ts if self.received_ts is None else self.received_ts


class BindEvent(_Frozen):
    """A `/v1/referrals/bind` that succeeded, kept so the ledger can be rebuilt by replay."""

    user_id: Str
    referrer_id: Str
    ts: Int


class LedgerDraft(_Frozen):
    """A ledger entry to append (before `seq`/`prev_hash`/`hash` are added by the chain).

    Its JSON dump is the ledger row: chain fields in a stored row are ignored when read back.
    """

    order_id: Str
    beneficiary: Str
    rule: Rule
    kind: EntryKind
    amount_cents: Int
    rate_bp: Int
    base_cents: Int
    reason: Str
    path: tuple[Str, ...]
    completed_ts: Int
    ts: Int

    @model_validator(mode="before")
    @classmethod
    def _ts_defaults_to_completion(cls, data: object) -> object:
        # Rows written before entries carried their own `ts` take the completion time.
        if isinstance(data, dict) and "ts" not in data and "completed_ts" in data:
            return {**data, "ts": data["completed_ts"]}
        return data

    def row(self) -> JSONDict:
        """Return the ledger row (the JSON the hash chain covers, without its chain fields)."""
        return self.model_dump(mode="json")
