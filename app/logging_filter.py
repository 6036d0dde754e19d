"""Log redaction: phone, ID-card and bank-card numbers never reach a log (PIPL).

:class:`RedactingFilter` rewrites a record's message (arguments merged in), exception text and
stack text through :func:`nlp.privacy.redact`. :func:`install_log_redaction` applies it to
every record the process creates — through the log-record factory, so handlers added later
(uvicorn's, a test's caplog) see redacted records too — and attaches the filter to the
root logger's handlers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from nlp.privacy import redact

_lock = threading.Lock()
_installed = False
_formatter = logging.Formatter()


class RedactingFilter(logging.Filter):
    """Redacts every record it sees; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def _redact_arg(a: object) -> object:
    return redact(a) if isinstance(a, str) else a


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a record in place (idempotent) and return it.

    The record keeps its shape when it can (formatters such as uvicorn's access log unpack
    ``args``): only the string arguments and the format are redacted. When a number only
    appears once they are merged, the message is merged and redacted as a whole.
    """
    if getattr(record, "_mingpian_redacted", False):
        return record
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # a bad format string: keep what there is
        message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = message, None
    clean = redact(message)
    if clean != message:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        try:
            still = record.getMessage()
        except (TypeError, ValueError):
            still = message
        if redact(still) != still:
            record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        record.exc_text = _formatter.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record._mingpian_redacted = True
    return record


def install_log_redaction() -> None:
    """Redact every log record of this process from now on (safe to call many times)."""
    global _installed
    with _lock:
        if not _installed:
            previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                return redact_record(previous(*args, **kwargs))

            logging.setLogRecordFactory(factory)
            _installed = True
        flt = RedactingFilter()
        for handler in logging.getLogger().handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(flt)
