"""The plan's refusals, typed where they are found (AppErrors: app/errors.py maps them to HTTP)."""

from __future__ import annotations

from models.errors import ConflictError, ValidationFailed


class PlanRefusal(ConflictError):
    """An event the plan refused; the error body names the precise reason as its code."""

    code = "plan_refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, details={"reason": reason})
        self.reason = reason
        self.code = reason


class BindingRefusedError(PlanRefusal):
    """A referral binding refused (self_referral, cycle, already_bound, binding_window)."""

    code = "binding_refused"


class InvalidEventError(PlanRefusal):
    """A stored event that does not parse (invalid_event) or has an unknown type."""

    code = "invalid_event"


class OrderConflictError(ConflictError):
    """An order id reused for another buyer."""

    code = "order_conflict"


class InvalidOrderError(ValidationFailed):
    """An order event whose amounts or time cannot be true (refused before it is stored)."""

    code = "invalid_order"


Refusal = PlanRefusal | OrderConflictError


def refusal_from_stored(code: str, message: str) -> Refusal:
    """Return the typed error of a refusal stored as (code, message) in an event's outcome."""
    if code == OrderConflictError.code:
        return OrderConflictError(message)
    if code in ("invalid_event", "unknown_event"):
        return InvalidEventError(code, message)
    return BindingRefusedError(code, message)
