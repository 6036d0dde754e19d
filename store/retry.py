"""One retry loop for optimistic store writes: bounded, jittered, never silent.

Read → build a Batch with version checks → commit; a CONFLICT means another worker wrote
first, and the caller re-reads and tries again. Every such loop goes through `retry`: a
bounded number of attempts, a full-jitter exponential pause between them (workers that lost
the same race do not retry in lockstep), and one way to fail: `ContentionError` once the
attempts are spent. Nothing is ever dropped quietly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from enum import Enum
from typing import Final, TypeVar

from models.errors import StoreUnavailableError

T = TypeVar("T")

DEFAULT_ATTEMPTS = 50


class Again(Enum):
    """What an attempt returns when it lost a race and should run again."""

    AGAIN = "again"


AGAIN: Final = Again.AGAIN


class ContentionError(StoreUnavailableError):
    """A record kept changing under us: every attempt lost its race."""

    def __init__(self, what: str, *, attempts: int) -> None:
        super().__init__(f"{what} kept conflicting; gave up after {attempts} attempts",
                         details={"attempts": attempts})
        self.attempts = attempts


def retry(attempt: Callable[[int], T | Again], *, what: str,
          attempts: int = DEFAULT_ATTEMPTS, base_s: float = 0.0005, cap_s: float = 0.01,
          sleep: Callable[[float], None] = time.sleep) -> T:
    """Return the first result of `attempt(n)` (n = 0, 1, …) that is not AGAIN; raise
    ContentionError, naming `what`, when `attempts` tries all returned AGAIN."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for n in range(attempts):
        out = attempt(n)
        if not isinstance(out, Again):
            return out
        if n + 1 < attempts:
            sleep(random.uniform(0, min(cap_s, base_s * 2 ** min(n, 30))))
    raise ContentionError(what, attempts=attempts)
