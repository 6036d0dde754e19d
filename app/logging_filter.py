"""Log redaction: phone, ID-card and bank-card numbers never reach a log (PIPL).

:class:`RedactingFilter` rewrites a record's message (arguments merged in), exception text and
stack text through :func:`nlp.privacy.redact`. :func:`install_log_redaction` applies it to
every record the process creates — through the log-record factory, so handlers added later
(uvicorn's, a test's caplog) see redacted records too — and attaches the filter to the
root logger's handlers. :func:`configure_logging` sets up the root logger, as plain text or
(``MINGPIAN_LOG_FORMAT=json``) one JSON object a line, redacted all the same.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
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


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    and ``exc`` / ``stack`` when the record has them; all of it redacted first."""

    def format(self, record: logging.LogRecord) -> str:
        redact_record(record)
        entry: dict[str, str] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(*, level: str, fmt: str = "text") -> None:
    """Give the root logger one stderr handler: plain text, or JSON lines with fmt "json"
    (MINGPIAN_LOG_FORMAT); nothing changes when it has a handler already."""
    if fmt == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level.upper(), handlers=[handler])
    else:
        logging.basicConfig(level=level.upper(), format=TEXT_FORMAT)
