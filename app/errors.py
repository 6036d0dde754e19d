"""Domain errors → HTTP, in one place."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bot.tags import NotConfiguredError
from models.errors import (
    AppError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    StoreUnavailableError,
    UnauthorizedError,
    UpstreamError,
    ValidationFailed,
)

log = logging.getLogger("mingpian.errors")

STATUS: dict[type[AppError], int] = {
    BadRequestError: 400,
    UnauthorizedError: 401,
    ForbiddenError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    NotConfiguredError: 409,  # WeCom is not set up here: the request cannot be done as asked
    PayloadTooLargeError: 413,
    ValidationFailed: 422,
    RateLimitedError: 429,
    UpstreamError: 502,
    StoreUnavailableError: 503,
}


def status_of(err: AppError) -> int:
    """Return the HTTP status for a domain error (most specific class wins)."""
    for cls in type(err).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_body(code: str, message: str, details: object | None = None) -> dict[str, object]:
    """Return the JSON error body of CONTRACTS."""
    err: dict[str, object] = {"code": code, "message": message}
    if details is not None:
        err["details"] = details
    return {"error": err}


def app_error_response(exc: AppError) -> JSONResponse:
    """Return the response for a domain error (also used by the callbacks' fast path)."""
    resp = JSONResponse(error_body(exc.code, exc.message, exc.details), status_of(exc))
    if isinstance(exc, RateLimitedError):
        resp.headers["Retry-After"] = str(exc.retry_after_s)  # RFC 9110 §10.2.3
    return resp


def unexpected_response(exc: Exception) -> JSONResponse:
    """Log a bug with its traceback; return a 500 that tells the caller nothing more."""
    log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
    return JSONResponse(error_body("internal", "internal error"), 500)


def error_response(exc: Exception) -> JSONResponse:
    """Return the response for any exception, as the app's handlers map it (the fast paths
    ahead of FastAPI's stack answer their errors with this)."""
    return app_error_response(exc) if isinstance(exc, AppError) else unexpected_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    """Map every error the app can raise to a JSON body and a status."""

    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return app_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")}
                   for e in exc.errors()]
        return JSONResponse(error_body("invalid", "request validation failed", details), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return unexpected_response(exc)
