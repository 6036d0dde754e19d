"""Domain errors; app/errors.py maps them to HTTP in one place."""

from __future__ import annotations


class AppError(Exception):
    """Base of every error the service reports to a caller."""

    code = "app_error"

    def __init__(self, message: str, *, details: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationFailed(AppError):
    """The input is well-formed transport but its content is invalid."""

    code = "invalid"


class BadRequestError(AppError):
    """The request cannot be parsed (malformed XML, bad encoding…)."""

    code = "bad_request"


class UnauthorizedError(AppError):
    """No or a wrong API key."""

    code = "unauthorized"


class ForbiddenError(AppError):
    """A bad WeChat/WeCom signature or a refused action."""

    code = "forbidden"


class NotFoundError(AppError):
    """The thing asked for does not exist."""

    code = "not_found"


class ConflictError(AppError):
    """The request conflicts with current state (e.g. a refused referral binding)."""

    code = "conflict"


class PayloadTooLargeError(AppError):
    """The body is over the size limit."""

    code = "payload_too_large"


class UpstreamError(AppError):
    """WeCom, WeChat or the mall failed."""

    code = "upstream"


class StoreUnavailableError(AppError):
    """The storage back-end cannot be reached."""

    code = "store_unavailable"


class RateLimitedError(AppError):
    """Too many requests from one client (or for one scarce resource): retry later."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int, details: object | None = None
                 ) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = max(1, retry_after_s)
