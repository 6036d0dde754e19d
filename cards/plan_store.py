"""The plan engine's state in the store, and the one function that applies a stored event.

Everything of the plan lives in the store family ``plan`` so that one `Batch` can write a
whole step atomically (see cards/orders.py for the applier):

    plan.events          log     every accepted order event and binding, in arrival order
    plan.ledger          log     the hash-chained ledger (cards/ledger.py)
    plan.ben.<name>      log     copies of one beneficiary's ledger entries, for exports;
                                 balances never read them, `audit verify` checks them
    plan.user/<name>     record  a user of the referral graph (cards/plan.py UserNode)
    plan.order/<id>      record  an order (cards/plan.py OrderRecord)
    plan.meta/cursor     record  how far the applier got: events applied, ledger length, head,
                                 and the head's HMAC tag (cards/ledger.py `head_tag`)
    plan.outcome/<id>    record  what became of one event (so its webhook can answer)
    plan.alias, plan.anon         pseudonyms (cards/pseudonyms.py)

`apply_event` is shared by the live applier (a `StorePlanState`) and `ledger rebuild`
(a `MemoryPlanState`), so a replay runs exactly the code that wrote the ledger. Each event
carries the plan settings and binding policy in force when it arrived, so a replay gives
the same ledger even after the settings change.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from cards.plan import (
    BindingRefused,
    BindPolicy,
    LedgerDraft,
    OrderConflict,
    OrderEvent,
    OrderRecord,
    PlanConfig,
    PlanEngine,
    PlanState,
    UserNode,
)
from store import Store

JSONDoc = dict[str, Any]

FAMILY = "plan"
LOG_EVENTS = "plan.events"
LOG_LEDGER = "plan.ledger"
NS_USER = "plan.user"
NS_ORDER = "plan.order"
NS_META = "plan.meta"
NS_OUTCOME = "plan.outcome"
CURSOR_KEY = "cursor"


def beneficiary_log(name: str) -> str:
    """Return the log holding copies of one beneficiary's ledger entries."""
    return f"plan.ben.{name}"


class StorePlanState:
    """A `PlanState` that reads the store and buffers every write for one atomic commit."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._users: dict[str, JSONDoc | None] = {}
        self._orders: dict[str, JSONDoc | None] = {}
        self._dirty_users: dict[str, JSONDoc] = {}
        self._dirty_orders: dict[str, JSONDoc] = {}

    def _load(self, ns: str, key: str, cache: dict[str, JSONDoc | None]) -> JSONDoc | None:
        if key not in cache:
            rec = self.store.get(ns, key)
            cache[key] = None if rec is None else rec.doc
        return cache[key]

    def get_user(self, user_id: str) -> UserNode | None:
        """Return a fresh copy of the user (buffered write first), or None."""
        doc = self._dirty_users.get(user_id) or self._load(NS_USER, user_id, self._users)
        return None if doc is None else UserNode.from_dict(doc)

    def put_user(self, user: UserNode) -> None:
        """Buffer the user for the commit."""
        self._dirty_users[user.user_id] = user.to_dict()

    def get_order(self, order_id: str) -> OrderRecord | None:
        """Return a fresh copy of the order (buffered write first), or None."""
        doc = self._dirty_orders.get(order_id) or self._load(NS_ORDER, order_id, self._orders)
        return None if doc is None else OrderRecord.from_dict(doc)

    def put_order(self, order: OrderRecord) -> None:
        """Buffer the order for the commit."""
        self._dirty_orders[order.order_id] = order.to_dict()

    def puts(self) -> list[tuple[str, str, JSONDoc]]:
        """Return the buffered writes as `Batch.puts`."""
        out = [(NS_USER, k, v) for k, v in self._dirty_users.items()]
        out += [(NS_ORDER, k, v) for k, v in self._dirty_orders.items()]
        return out


@dataclass(frozen=True)
class Outcome:
    """What became of one event: applied, or refused with a reason code."""

    status: Literal["applied", "refused"]
    code: str = ""
    message: str = ""

    def to_dict(self) -> JSONDoc:
        """Return the outcome as JSON."""
        return {"status": self.status, "code": self.code, "message": self.message}

    @classmethod
    def from_dict(cls, doc: JSONDoc) -> Outcome:
        """Return the outcome stored as doc."""
        code, message = str(doc.get("code", "")), str(doc.get("message", ""))
        if doc.get("status") == "applied":
            return cls("applied", code, message)
        return cls("refused", code, message)


APPLIED = Outcome("applied")


def plan_config_doc(config: PlanConfig) -> JSONDoc:
    """Return the settings an event records (so replays use what was in force)."""
    return {
        "agent_threshold_cents": config.agent_threshold_cents,
        "slide_count": config.slide_count,
        "direct_bp": config.direct_bp,
        "team_bp": config.team_bp,
        "peer_bp": config.peer_bp,
        "max_levels": config.max_levels,
        "max_total_bp": config.max_total_bp,
        "freeze_days": config.freeze_days,
    }


def _engine(state: PlanState, doc: JSONDoc) -> PlanEngine:
    plan = doc.get("plan") or {}
    config = PlanConfig(**{k: int(v) for k, v in plan.items()
                           if k in PlanConfig.__dataclass_fields__})
    policy: BindPolicy = doc.get("policy", "first")
    return PlanEngine(config, state, bind_policy=policy,
                      bind_window_days=int(doc.get("window_days", 30)))


def apply_event(state: PlanState, doc: JSONDoc) -> tuple[Outcome, list[LedgerDraft]]:
    """Apply one stored event (order or binding) to state; return its outcome and drafts.

    A refusal (a binding the policy refuses, an order id reused for another buyer, an event
    that does not parse) writes nothing and is recorded as the event's outcome, on replay too.
    """
    try:
        engine = _engine(state, doc)
        if doc.get("type") == "bind":
            engine.bind(str(doc["user_id"]), str(doc["referrer_id"]), ts=int(doc["ts"]))
            return APPLIED, []
        if doc.get("type") == "order":
            event = OrderEvent.from_dict(doc["order"])
            if event.received_ts is None and doc.get("received_ts") is not None:
                # The receive time stamped on the stored event starts the freeze (issue 12).
                event = replace(event, received_ts=int(doc["received_ts"]))
            return APPLIED, engine.apply_order_event(event)
        return Outcome("refused", "unknown_event", f"unknown event type {doc.get('type')!r}"), []
    except (BindingRefused, OrderConflict) as e:
        return Outcome("refused", e.reason_code, e.message), []
    except (KeyError, TypeError, ValueError) as e:
        return Outcome("refused", "invalid_event", f"event does not parse: {e}"), []
