"""Unix times as the RFC 3339 UTC strings the API shows (CONTRACTS: "2026-11-25T08:00:00Z")."""

from __future__ import annotations

import time


def rfc3339(ts: float) -> str:
    """Return a Unix time as an RFC 3339 UTC string to the second ("2026-11-25T08:00:00Z")."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))
