"""The compliant "链动2+1" referral plan (CONTRACTS §7) as a pure, deterministic state machine.

Nothing here does I/O or reads a clock: times come in with the events, state goes through the
small `PlanState` Protocol (dicts in `MemoryPlanState`, a database behind it in production),
and the engine answers with `LedgerDraft`s that the caller appends to the hash-chained ledger.

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
- Rates (`*_bp`) are clamped to 0..10000, `slide_count` and `freeze_days` to >= 0; the
  effective agent threshold is at least 1 cent, so E = 0 never promotes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, Protocol, get_args

Role = Literal["member", "agent", "boss"]
OrderStatus = Literal["paid", "completed", "refunded"]
Rule = Literal["direct", "team", "peer"]
EntryKind = Literal["credit", "withheld", "reversal"]
EntryStatus = Literal["pending", "payable", "reversal", "withheld"]
BindPolicy = Literal["first", "window_days", "last"]
JSONDict = dict[str, Any]

DAY_S = 86_400
BP_DENOMINATOR = 10_000
MAX_LEVELS_CEILING = 2
MAX_TOTAL_BP_CEILING = 3_000
REASON_MAX_LEVELS = "compliance:max_levels"
REASON_MAX_TOTAL = "compliance:max_total"
REASON_REFUND = "refund"

_ROLES: tuple[str, ...] = get_args(Role)
_STATUSES: tuple[str, ...] = get_args(OrderStatus)
_RULES: tuple[str, ...] = get_args(Rule)
_KINDS: tuple[str, ...] = get_args(EntryKind)
_POLICIES: tuple[str, ...] = get_args(BindPolicy)


# --------------------------------------------------------------------------- errors


class PlanError(Exception):
    """A plan operation refused with a machine-readable reason code."""

    code = "plan_error"

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.message = message


class BindingRefused(PlanError):
    """A referral binding was refused (self-referral, cycle, policy)."""

    code = "binding_refused"


class OrderConflict(PlanError):
    """An order event contradicts what is recorded for the order (another buyer)."""

    code = "order_conflict"


# --------------------------------------------------------------------------- JSON edge helpers


def _req(data: Mapping[str, Any], key: str) -> Any:
    if key not in data:
        raise ValueError(f"missing field {key!r}")
    return data[key]


def _as_str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string")
    return value


def _as_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"field {key!r} must be an integer")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return None if value is None else _as_str(value, key)


def _opt_int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    return None if value is None else _as_int(value, key)


def _str_list(data: Mapping[str, Any], key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"field {key!r} must be a list")
    return [_as_str(v, key) for v in value]


def _choice(value: Any, key: str, allowed: tuple[str, ...]) -> str:
    text = _as_str(value, key)
    if text not in allowed:
        raise ValueError(f"field {key!r} must be one of {', '.join(allowed)}")
    return text


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class PlanConfig:
    """Plan settings (`MINGPIAN_PLAN__*`); the engine clamps them to the compliant range."""

    agent_threshold_cents: int = 1
    slide_count: int = 2
    direct_bp: int = 1000
    team_bp: int = 500
    peer_bp: int = 2000
    max_levels: int = 2
    max_total_bp: int = 3000
    freeze_days: int = 7


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


@dataclass(frozen=True)
class _Limits:
    """The settings as the engine applies them, whatever the configuration says."""

    threshold_cents: int
    slide_count: int
    direct_bp: int
    team_bp: int
    peer_bp: int
    max_levels: int
    max_total_bp: int

    @classmethod
    def of(cls, config: PlanConfig) -> _Limits:
        return cls(
            threshold_cents=max(1, config.agent_threshold_cents),
            slide_count=max(0, config.slide_count),
            direct_bp=_clamp(config.direct_bp, 0, BP_DENOMINATOR),
            team_bp=_clamp(config.team_bp, 0, BP_DENOMINATOR),
            peer_bp=_clamp(config.peer_bp, 0, BP_DENOMINATOR),
            # Compliance (CONTRACTS §7.6) holds whatever the settings say.
            max_levels=_clamp(config.max_levels, 0, MAX_LEVELS_CEILING),
            max_total_bp=_clamp(config.max_total_bp, 0, MAX_TOTAL_BP_CEILING),
        )


def effective_max_levels(config: PlanConfig) -> int:
    """Return the max_levels the engine enforces (clamped to 0..2)."""
    return _Limits.of(config).max_levels


def effective_max_total_bp(config: PlanConfig) -> int:
    """Return the max_total_bp the engine enforces (clamped to 0..3000)."""
    return _Limits.of(config).max_total_bp


def _freeze_s(config: PlanConfig) -> int:
    return max(0, config.freeze_days) * DAY_S


# --------------------------------------------------------------------------- state records


@dataclass
class UserNode:
    """One user in the referral graph; stored as a JSON document."""

    user_id: str
    role: Role = "member"
    referrer: str | None = None
    bound_ts: int | None = None
    # The boss whose team this agent belongs to (fixed at promotion); a boss's boss is itself.
    boss: str | None = None
    origin_boss: str | None = None
    # Direct referrals that became agents while this user was an agent and slid away.
    slid_count: int = 0
    direct_referrals: list[str] = field(default_factory=list)
    team: list[str] = field(default_factory=list)
    agent_ts: int | None = None
    boss_ts: int | None = None

    def to_dict(self) -> JSONDict:
        """Return the node as a plain JSON-able dict."""
        return {
            "user_id": self.user_id,
            "role": self.role,
            "referrer": self.referrer,
            "bound_ts": self.bound_ts,
            "boss": self.boss,
            "origin_boss": self.origin_boss,
            "slid_count": self.slid_count,
            "direct_referrals": list(self.direct_referrals),
            "team": list(self.team),
            "agent_ts": self.agent_ts,
            "boss_ts": self.boss_ts,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserNode:
        """Return the node stored as `data` (the shape of `to_dict`)."""
        return cls(
            user_id=_as_str(_req(data, "user_id"), "user_id"),
            role=_parse_role(data.get("role", "member")),
            referrer=_opt_str(data, "referrer"),
            bound_ts=_opt_int(data, "bound_ts"),
            boss=_opt_str(data, "boss"),
            origin_boss=_opt_str(data, "origin_boss"),
            slid_count=_as_int(data.get("slid_count", 0), "slid_count"),
            direct_referrals=_str_list(data, "direct_referrals"),
            team=_str_list(data, "team"),
            agent_ts=_opt_int(data, "agent_ts"),
            boss_ts=_opt_int(data, "boss_ts"),
        )


def _parse_role(value: Any) -> Role:
    text = _choice(value, "role", _ROLES)
    if text == "agent":
        return "agent"
    if text == "boss":
        return "boss"
    return "member"


def _parse_rule(value: Any) -> Rule:
    text = _choice(value, "rule", _RULES)
    if text == "direct":
        return "direct"
    if text == "team":
        return "team"
    return "peer"


def _parse_kind(value: Any) -> EntryKind:
    text = _choice(value, "kind", _KINDS)
    if text == "credit":
        return "credit"
    if text == "withheld":
        return "withheld"
    return "reversal"


def _parse_status(value: Any) -> OrderStatus:
    text = _choice(value, "status", _STATUSES)
    if text == "paid":
        return "paid"
    if text == "completed":
        return "completed"
    return "refunded"


@dataclass
class RewardRecord:
    """A credited reward of an order, kept so that refunds can reverse it."""

    beneficiary: str
    rule: Rule
    rate_bp: int
    base_cents: int
    credited_cents: int
    reversed_cents: int
    path: list[str]

    def to_dict(self) -> JSONDict:
        """Return the reward as a plain JSON-able dict."""
        return {
            "beneficiary": self.beneficiary,
            "rule": self.rule,
            "rate_bp": self.rate_bp,
            "base_cents": self.base_cents,
            "credited_cents": self.credited_cents,
            "reversed_cents": self.reversed_cents,
            "path": list(self.path),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RewardRecord:
        """Return the reward stored as `data`."""
        return cls(
            beneficiary=_as_str(_req(data, "beneficiary"), "beneficiary"),
            rule=_parse_rule(_req(data, "rule")),
            rate_bp=_as_int(_req(data, "rate_bp"), "rate_bp"),
            base_cents=_as_int(_req(data, "base_cents"), "base_cents"),
            credited_cents=_as_int(_req(data, "credited_cents"), "credited_cents"),
            reversed_cents=_as_int(data.get("reversed_cents", 0), "reversed_cents"),
            path=_str_list(data, "path"),
        )


@dataclass
class OrderRecord:
    """What the plan remembers of one order; stored as a JSON document."""

    order_id: str
    user_id: str
    amount_cents: int
    refund_cents: int = 0
    paid_ts: int | None = None
    completed_ts: int | None = None
    eligible_cents: int | None = None
    # Idempotency keys "status:refund_cents" already applied, in arrival order.
    seen: list[str] = field(default_factory=list)
    rewards: list[RewardRecord] = field(default_factory=list)

    def to_dict(self) -> JSONDict:
        """Return the order as a plain JSON-able dict."""
        return {
            "order_id": self.order_id,
            "user_id": self.user_id,
            "amount_cents": self.amount_cents,
            "refund_cents": self.refund_cents,
            "paid_ts": self.paid_ts,
            "completed_ts": self.completed_ts,
            "eligible_cents": self.eligible_cents,
            "seen": list(self.seen),
            "rewards": [r.to_dict() for r in self.rewards],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OrderRecord:
        """Return the order stored as `data` (the shape of `to_dict`)."""
        rewards = data.get("rewards", [])
        if not isinstance(rewards, list):
            raise ValueError("field 'rewards' must be a list")
        return cls(
            order_id=_as_str(_req(data, "order_id"), "order_id"),
            user_id=_as_str(_req(data, "user_id"), "user_id"),
            amount_cents=_as_int(_req(data, "amount_cents"), "amount_cents"),
            refund_cents=_as_int(data.get("refund_cents", 0), "refund_cents"),
            paid_ts=_opt_int(data, "paid_ts"),
            completed_ts=_opt_int(data, "completed_ts"),
            eligible_cents=_opt_int(data, "eligible_cents"),
            seen=_str_list(data, "seen"),
            rewards=[RewardRecord.from_dict(r) for r in rewards],
        )


class PlanState(Protocol):
    """Where the plan keeps its users and orders (dicts here, a database in production)."""

    def get_user(self, user_id: str) -> UserNode | None: ...
    def put_user(self, user: UserNode) -> None: ...
    def get_order(self, order_id: str) -> OrderRecord | None: ...
    def put_order(self, order: OrderRecord) -> None: ...


class MemoryPlanState:
    """A `PlanState` in dicts; stores JSON dicts so that it behaves like a document store."""

    def __init__(self) -> None:
        self.users: dict[str, JSONDict] = {}
        self.orders: dict[str, JSONDict] = {}

    def get_user(self, user_id: str) -> UserNode | None:
        """Return a fresh copy of the stored user, or None."""
        data = self.users.get(user_id)
        return None if data is None else UserNode.from_dict(data)

    def put_user(self, user: UserNode) -> None:
        """Store (a copy of) the user."""
        self.users[user.user_id] = user.to_dict()

    def get_order(self, order_id: str) -> OrderRecord | None:
        """Return a fresh copy of the stored order, or None."""
        data = self.orders.get(order_id)
        return None if data is None else OrderRecord.from_dict(data)

    def put_order(self, order: OrderRecord) -> None:
        """Store (a copy of) the order."""
        self.orders[order.order_id] = order.to_dict()


# --------------------------------------------------------------------------- events and drafts


@dataclass(frozen=True)
class OrderItem:
    """One line of an order; `reward_eligible: false` marks a fee or gift that never counts."""

    item_id: str
    amount_cents: int
    reward_eligible: bool = True


@dataclass(frozen=True)
class OrderEvent:
    """One mall order webhook event, its `ref_code` already resolved to `referrer_id`."""

    order_id: str
    user_id: str
    status: OrderStatus
    amount_cents: int
    ts: int
    refund_cents: int = 0
    items: tuple[OrderItem, ...] = ()
    referrer_id: str | None = None
    # When the service received the event (its clock, not the mall's `ts`): the freeze of a
    # `completed` event runs from here, so a back-dated `ts` cannot skip it (issue 12).
    received_ts: int | None = None

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise ValueError(f"status must be one of {', '.join(_STATUSES)}")
        if self.amount_cents < 0 or self.refund_cents < 0:
            raise ValueError("amount_cents and refund_cents must be >= 0")
        if any(item.amount_cents < 0 for item in self.items):
            raise ValueError("item amount_cents must be >= 0")

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

    def to_dict(self) -> JSONDict:
        """Return the event as a plain JSON-able dict."""
        return {
            "order_id": self.order_id,
            "user_id": self.user_id,
            "status": self.status,
            "amount_cents": self.amount_cents,
            "refund_cents": self.refund_cents,
            "items": [
                {
                    "item_id": i.item_id,
                    "amount_cents": i.amount_cents,
                    "reward_eligible": i.reward_eligible,
                }
                for i in self.items
            ],
            "referrer_id": self.referrer_id,
            "ts": self.ts,
        } | ({} if self.received_ts is None else {"received_ts": self.received_ts})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OrderEvent:
        """Return the event stored as `data`; a missing `reward_eligible` means true."""
        raw_items = data.get("items") or []
        if not isinstance(raw_items, list):
            raise ValueError("field 'items' must be a list")
        items: list[OrderItem] = []
        for raw in raw_items:
            if not isinstance(raw, Mapping):
                raise ValueError("each item must be an object")
            eligible = raw.get("reward_eligible", True)
            items.append(
                OrderItem(
                    item_id=_as_str(_req(raw, "item_id"), "item_id"),
                    amount_cents=_as_int(_req(raw, "amount_cents"), "amount_cents"),
                    reward_eligible=True if eligible is None else bool(eligible),
                )
            )
        return cls(
            order_id=_as_str(_req(data, "order_id"), "order_id"),
            user_id=_as_str(_req(data, "user_id"), "user_id"),
            status=_parse_status(_req(data, "status")),
            amount_cents=_as_int(_req(data, "amount_cents"), "amount_cents"),
            refund_cents=_as_int(data.get("refund_cents") or 0, "refund_cents"),
            items=tuple(items),
            referrer_id=_opt_str(data, "referrer_id"),
            ts=_as_int(_req(data, "ts"), "ts"),
            received_ts=_opt_int(data, "received_ts"),
        )


@dataclass(frozen=True)
class BindEvent:
    """A `/v1/referrals/bind` that succeeded, kept so the ledger can be rebuilt by replay."""

    user_id: str
    referrer_id: str
    ts: int


@dataclass(frozen=True)
class LedgerDraft:
    """A ledger entry to append (before `seq`/`prev_hash`/`hash` are added by the chain)."""

    order_id: str
    beneficiary: str
    rule: Rule
    kind: EntryKind
    amount_cents: int
    rate_bp: int
    base_cents: int
    reason: str
    path: tuple[str, ...]
    completed_ts: int
    ts: int

    def to_dict(self) -> JSONDict:
        """Return the draft as a plain JSON-able dict (the ledger row without its chain fields)."""
        return {
            "order_id": self.order_id,
            "beneficiary": self.beneficiary,
            "rule": self.rule,
            "kind": self.kind,
            "amount_cents": self.amount_cents,
            "rate_bp": self.rate_bp,
            "base_cents": self.base_cents,
            "reason": self.reason,
            "path": list(self.path),
            "completed_ts": self.completed_ts,
            "ts": self.ts,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LedgerDraft:
        """Return the draft stored as `data`; chain fields (`seq`, `hash`, ...) are ignored."""
        return cls(
            order_id=_as_str(_req(data, "order_id"), "order_id"),
            beneficiary=_as_str(_req(data, "beneficiary"), "beneficiary"),
            rule=_parse_rule(_req(data, "rule")),
            kind=_parse_kind(_req(data, "kind")),
            amount_cents=_as_int(_req(data, "amount_cents"), "amount_cents"),
            rate_bp=_as_int(_req(data, "rate_bp"), "rate_bp"),
            base_cents=_as_int(_req(data, "base_cents"), "base_cents"),
            reason=_as_str(_req(data, "reason"), "reason"),
            path=tuple(_str_list(data, "path")),
            completed_ts=_as_int(_req(data, "completed_ts"), "completed_ts"),
            ts=_as_int(data.get("ts", data.get("completed_ts")), "ts"),
        )


# --------------------------------------------------------------------------- reading entries


def _draft(entry: LedgerDraft | Mapping[str, Any]) -> LedgerDraft:
    return entry if isinstance(entry, LedgerDraft) else LedgerDraft.from_dict(entry)


def entry_status(
    entry: LedgerDraft | Mapping[str, Any], *, now_ts: int, config: PlanConfig
) -> EntryStatus:
    """Return how an entry reads at `now_ts`: pending, payable, reversal or withheld."""
    draft = _draft(entry)
    if draft.kind == "withheld":
        return "withheld"
    if draft.kind == "reversal":
        return "reversal"
    return "payable" if now_ts >= draft.completed_ts + _freeze_s(config) else "pending"


@dataclass(frozen=True)
class Balance:
    """A user's money from the plan: still frozen (pending) and free to pay out (payable)."""

    pending_cents: int = 0
    payable_cents: int = 0

    def to_dict(self) -> dict[str, int]:
        """Return the balance as the `balances` object of `GET /v1/rewards`."""
        return {"pending_cents": self.pending_cents, "payable_cents": self.payable_cents}


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
    freeze = _freeze_s(config)
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
) -> JSONDict:
    """Return the body of `GET /v1/rewards?user_id=U` from the ledger's entries."""
    mine = [d for d in (_draft(e) for e in entries) if d.beneficiary == user_id]
    balance = balances(mine, now_ts=now_ts, config=config).get(user_id, Balance())
    return {
        "entries": [
            {
                "order_id": d.order_id,
                "rule": d.rule,
                "amount_cents": d.amount_cents,
                "status": entry_status(d, now_ts=now_ts, config=config),
                "reason": d.reason,
                "path": list(d.path),
                "rate_bp": d.rate_bp,
                "base_cents": d.base_cents,
            }
            for d in mine
        ],
        "balances": balance.to_dict(),
    }


# --------------------------------------------------------------------------- engine


class _Session:
    """A unit of work: loads each record once, writes the changed ones at the end."""

    def __init__(self, state: PlanState) -> None:
        self._state = state
        self._users: dict[str, UserNode] = {}
        self._dirty_users: list[str] = []
        self._orders: dict[str, OrderRecord] = {}
        self._dirty_orders: list[str] = []

    def peek_user(self, user_id: str) -> UserNode | None:
        if user_id in self._users:
            return self._users[user_id]
        node = self._state.get_user(user_id)
        if node is not None:
            self._users[user_id] = node
        return node

    def user(self, user_id: str) -> UserNode:
        node = self.peek_user(user_id)
        if node is None:
            node = UserNode(user_id=user_id)
            self._users[user_id] = node
        return node

    def touch(self, node: UserNode) -> None:
        if node.user_id not in self._dirty_users:
            self._dirty_users.append(node.user_id)

    def order(self, order_id: str) -> OrderRecord | None:
        if order_id not in self._orders:
            record = self._state.get_order(order_id)
            if record is None:
                return None
            self._orders[order_id] = record
        return self._orders[order_id]

    def put_order(self, order: OrderRecord) -> None:
        self._orders[order.order_id] = order
        if order.order_id not in self._dirty_orders:
            self._dirty_orders.append(order.order_id)

    def commit(self) -> None:
        for user_id in self._dirty_users:
            self._state.put_user(self._users[user_id])
        for order_id in self._dirty_orders:
            self._state.put_order(self._orders[order_id])


@dataclass(frozen=True)
class _Candidate:
    rule: Rule
    beneficiary: str
    rate_bp: int
    base_cents: int
    amount_cents: int


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
        self._limits = _Limits.of(config)

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
        """Bind `user_id` to `referrer_id` and return the user; raise BindingRefused if refused.

        `policy`/`window_days` default to the engine's. Binding again to the current
        referrer is a no-op that succeeds.
        """
        session = _Session(self.state)
        node = self._bind(
            session,
            user_id=user_id,
            referrer_id=referrer_id,
            ts=ts,
            policy=policy or self.bind_policy,
            window_days=self.bind_window_days if window_days is None else window_days,
        )
        session.commit()
        return node

    def _bind(
        self,
        session: _Session,
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
            raise BindingRefused("self_referral", "a user cannot refer itself")
        user = session.user(user_id)
        if user.referrer == referrer_id:
            return user
        if user.referrer is not None:
            if policy == "first":
                raise BindingRefused(
                    "already_bound",
                    f"user is already bound to {user.referrer}; first binding is final",
                )
            if policy == "window_days":
                until = (user.bound_ts or 0) + max(0, window_days) * DAY_S
                if ts < until:
                    raise BindingRefused(
                        "binding_window",
                        f"user is bound to {user.referrer} until ts {until} ({window_days}-day window)",
                    )
        if user_id in self._ancestors(session, referrer_id, looking_for=[user_id]):
            raise BindingRefused(
                "cycle", f"{referrer_id} is already referred (in)directly by {user_id}"
            )
        referrer = session.user(referrer_id)
        if user.referrer is not None:
            previous = session.user(user.referrer)
            if user_id in previous.direct_referrals:
                previous.direct_referrals.remove(user_id)
            session.touch(previous)
        user.referrer = referrer_id
        user.bound_ts = ts
        if user_id not in referrer.direct_referrals:
            referrer.direct_referrals.append(user_id)
        session.touch(user)
        session.touch(referrer)
        return user

    @staticmethod
    def _ancestors(session: _Session, user_id: str, *, looking_for: Iterable[str]) -> list[str]:
        """Return `user_id` and its referrers upwards until every id in `looking_for` is met."""
        # Stops at the top, and on a repeated id should a corrupt store hold a cycle.
        chain = [user_id]
        seen = {user_id}
        missing = set(looking_for) - seen
        node = session.peek_user(user_id)
        while missing and node is not None and node.referrer is not None:
            if node.referrer in seen:
                break
            chain.append(node.referrer)
            seen.add(node.referrer)
            missing.discard(node.referrer)
            node = session.peek_user(node.referrer)
        return chain

    # ------------------------------------------------------------------ orders

    def apply_order_event(self, event: OrderEvent) -> list[LedgerDraft]:
        """Apply one order webhook event and return the ledger entries it adds (often none)."""
        session = _Session(self.state)
        order = session.order(event.order_id)
        if order is not None and order.user_id != event.user_id:
            raise OrderConflict("order_conflict", f"order {event.order_id} belongs to another user")
        key = f"{event.status}:{event.refund_cents}"
        if order is not None and key in order.seen:
            return []  # the first event per (order_id, status, refund_cents) wins
        if order is None:
            order = OrderRecord(
                order_id=event.order_id, user_id=event.user_id, amount_cents=event.amount_cents
            )
        order.seen.append(key)
        buyer = session.user(event.user_id)
        session.touch(buyer)
        if event.referrer_id is not None and event.status != "refunded" and buyer.referrer is None:
            # An order's ref_code that cannot bind is ignored (CONTRACTS §7).
            with contextlib.suppress(BindingRefused):
                self._bind(
                    session,
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
            self._promote(session, buyer=buyer, eligible_cents=eligible, ts=event.ts)
            drafts.extend(self._rewards(session, order=order, buyer=buyer,
                                        completed_ts=order.completed_ts, ts=event.ts))
        if order.completed_ts is not None:
            drafts.extend(self._reversals(order, ts=event.ts))
        session.put_order(order)
        session.commit()
        return drafts

    def _promote(self, session: _Session, *, buyer: UserNode, eligible_cents: int, ts: int) -> None:
        if buyer.role != "member" or eligible_cents < self._limits.threshold_cents:
            return
        buyer.role = "agent"
        buyer.agent_ts = ts
        session.touch(buyer)
        if buyer.referrer is None:
            return
        referrer = session.user(buyer.referrer)
        if referrer.role == "member":
            return  # became an agent under a member: no team, and no slide counted
        if referrer.role == "boss":
            self._join_team(session, agent=buyer, boss=referrer)
            return
        session.touch(referrer)
        if referrer.slid_count < self._limits.slide_count:
            referrer.slid_count += 1  # slide: joins the referrer's boss's team, if any
            if referrer.boss is not None:
                self._join_team(session, agent=buyer, boss=session.user(referrer.boss))
            return
        # The "+1": the referrer becomes a boss, its origin the boss it belonged to.
        old_boss_id = referrer.boss
        referrer.role = "boss"
        referrer.boss_ts = ts
        referrer.origin_boss = old_boss_id
        referrer.boss = referrer.user_id
        if old_boss_id is not None:
            old_boss = session.user(old_boss_id)
            if referrer.user_id in old_boss.team:
                old_boss.team.remove(referrer.user_id)
            session.touch(old_boss)
        self._join_team(session, agent=buyer, boss=referrer)

    @staticmethod
    def _join_team(session: _Session, *, agent: UserNode, boss: UserNode) -> None:
        agent.boss = boss.user_id
        if agent.user_id not in boss.team:
            boss.team.append(agent.user_id)
        session.touch(agent)
        session.touch(boss)

    def _candidates(self, session: _Session, *, buyer: UserNode, eligible: int) -> list[_Candidate]:
        limits = self._limits
        found: list[_Candidate] = []
        if buyer.referrer is not None:
            referrer = session.peek_user(buyer.referrer)
            if referrer is not None and referrer.role != "member":
                found.append(
                    _Candidate(
                        rule="direct",
                        beneficiary=referrer.user_id,
                        rate_bp=limits.direct_bp,
                        base_cents=eligible,
                        amount_cents=eligible * limits.direct_bp // BP_DENOMINATOR,
                    )
                )
        # Only an agent buyer in a team yields team and peer rewards (not members, not bosses).
        if buyer.role == "agent" and buyer.boss is not None and buyer.boss != buyer.user_id:
            team_cents = eligible * limits.team_bp // BP_DENOMINATOR
            found.append(
                _Candidate(
                    rule="team",
                    beneficiary=buyer.boss,
                    rate_bp=limits.team_bp,
                    base_cents=eligible,
                    amount_cents=team_cents,
                )
            )
            boss = session.peek_user(buyer.boss)
            if boss is not None and boss.origin_boss is not None:
                # The peer reward's base is the team amount before compliance cuts.
                found.append(
                    _Candidate(
                        rule="peer",
                        beneficiary=boss.origin_boss,
                        rate_bp=limits.peer_bp,
                        base_cents=team_cents,
                        amount_cents=team_cents * limits.peer_bp // BP_DENOMINATOR,
                    )
                )
        return [c for c in found if c.beneficiary != buyer.user_id]

    def _rewards(
        self, session: _Session, *, order: OrderRecord, buyer: UserNode, completed_ts: int,
        ts: int,
    ) -> list[LedgerDraft]:
        eligible = order.eligible_cents or 0
        candidates = self._candidates(session, buyer=buyer, eligible=eligible)
        chain = self._ancestors(
            session, buyer.user_id, looking_for=[c.beneficiary for c in candidates]
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

    def referral_view(self, user_id: str) -> JSONDict:
        """Return the body of `GET /v1/referrals/{user_id}` (a user never seen reads as a member)."""
        node = self.state.get_user(user_id) or UserNode(user_id=user_id)
        return {
            "role": node.role,
            "referrer": node.referrer,
            "boss": node.user_id if node.role == "boss" else node.boss,
            "origin_boss": node.origin_boss,
            "direct_referrals": list(node.direct_referrals),
            "team": list(node.team) if node.role == "boss" else [],
        }


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
            except BindingRefused:
                continue
        else:
            drafts.extend(engine.apply_order_event(event))
    return drafts, state
