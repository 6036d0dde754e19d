"""Times as the RFC 3339 UTC strings the API and the stores show (CONTRACTS:
"2026-11-25T08:00:00Z"): one formatter for datetimes and Unix times alike."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime) -> datetime:
    """Return value in UTC (a naive datetime is taken to be UTC already)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def format_rfc3339(value: datetime) -> str:
    """Return an RFC 3339 UTC string with a Z suffix (no microseconds unless present)."""
    return as_utc(value).isoformat().replace("+00:00", "Z")


def rfc3339(ts: float) -> str:
    """Return a Unix time as an RFC 3339 UTC string to the second ("2026-11-25T08:00:00Z")."""
    return format_rfc3339(datetime.fromtimestamp(int(ts), tz=UTC))
