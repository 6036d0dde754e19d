"""The plan engine's state in the store, and the one function that applies a stored event.

Everything of the plan lives in the store family ``plan`` so that one `Batch` can write a
whole step atomically (see cards/orders.py for the applier):

    plan.events          log     every accepted order event and binding, in arrival order
    plan.ledger          log     the hash-chained ledger (cards/ledger.py)
    plan.ben.<name>      log     copies of one beneficiary's ledger entries, for exports;
                                 balances never read them, `audit verify` checks them
    plan.user/<name>     record  a user of the referral graph (cards/plan/records.py UserNode)
    plan.order/<id>      record  an order (cards/plan/records.py OrderRecord)
    plan.meta/cursor     record  how far the applier got: events applied, ledger length, head,
                                 and the head's HMAC tag (cards/ledger.py `head_tag`)
    plan.outcome/<id>    record  what became of one event (so its webhook can answer)
    plan.alias, plan.anon         pseudonyms (cards/pseudonyms.py)

`apply_event` is shared by the live applier (a `StorePlanState`) and `ledger rebuild`
(a `MemoryPlanState`), both the one write buffer of cards/plan/state.py, so a replay runs exactly the code that wrote the ledger. Each event
carries the plan settings and binding policy in force when it arrived, so a replay gives
the same ledger even after the settings change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cards.plan import (
    NS_ORDER,
    NS_USER,
    BindPolicy,
    InvalidEventError,
    LedgerDraft,
    OrderConflictError,
    OrderEvent,
    PlanConfig,
    PlanEngine,
    PlanRefusal,
    PlanState,
    Refusal,
    refusal_from_stored,
)
from store import Store

JSONDoc = dict[str, Any]

FAMILY = "plan"
LOG_EVENTS = "plan.events"
LOG_LEDGER = "plan.ledger"
NS_META = "plan.meta"
NS_OUTCOME = "plan.outcome"
CURSOR_KEY = "cursor"

__all__ = ["NS_ORDER", "NS_USER"]  # re-exported: the store layout is listed here


def beneficiary_log(name: str) -> str:
    """Return the log holding copies of one beneficiary's ledger entries."""
    return f"plan.ben.{name}"


class StorePlanState(PlanState):
    """The plan's write buffer over the store: reads it, and hands its writes to one `Batch`."""

    def __init__(self, store: Store) -> None:
        def load(ns: str, key: str) -> JSONDoc | None:
            rec = store.get(ns, key)
            return None if rec is None else rec.doc

        super().__init__(load)
        self.store = store


@dataclass(frozen=True)
class Outcome:
    """What became of one event: applied, or refused by the typed error that refused it.

    Stored as `{"status", "code", "message"}`; two outcomes are equal when those are.
    """

    status: Literal["applied", "refused"]
    code: str = ""
    message: str = ""
    error: Refusal | None = field(default=None, compare=False, repr=False)

    @classmethod
    def refused(cls, error: Refusal) -> Outcome:
        """Return the outcome of an event refused with error."""
        return cls("refused", error.code, error.message, error)

    def raise_if_refused(self) -> None:
        """Raise the refusal (an AppError: 409 with its precise code), if this is one."""
        if self.error is not None:
            raise self.error

    def to_dict(self) -> JSONDoc:
        """Return the outcome as JSON."""
        return {"status": self.status, "code": self.code, "message": self.message}

    @classmethod
    def from_dict(cls, doc: JSONDoc) -> Outcome:
        """Return the outcome stored as doc, its refusal typed again."""
        code, message = str(doc.get("code", "")), str(doc.get("message", ""))
        if doc.get("status") == "applied":
            return cls("applied", code, message)
        return cls.refused(refusal_from_stored(code, message))


APPLIED = Outcome("applied")


def plan_config_doc(config: PlanConfig) -> JSONDoc:
    """Return the settings an event records (so replays use what was in force)."""
    return config.model_dump()


def _engine(state: PlanState, doc: JSONDoc) -> PlanEngine:
    config = PlanConfig.model_validate(doc.get("plan") or {})
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
            event = OrderEvent.model_validate(doc["order"])
            if event.received_ts is None and doc.get("received_ts") is not None:
                # The receive time stamped on the stored event starts the freeze (issue 12).
                event = event.model_copy(update={"received_ts": int(doc["received_ts"])})
            return APPLIED, engine.apply_order_event(event)
        raise InvalidEventError("unknown_event", f"unknown event type {doc.get('type')!r}")
    except (PlanRefusal, OrderConflictError) as e:
        return Outcome.refused(e), []
    except (KeyError, TypeError, ValueError) as e:
        return Outcome.refused(InvalidEventError("invalid_event", f"event does not parse: {e}")), []
