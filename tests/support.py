"""Helpers shared by the tests of every package."""

from __future__ import annotations

import time


class StoreClock:
    """Time as the store under test sees it, moved on by `advance`.

    SQLite computes every expiry from the clock it is given: advancing moves that clock
    (real time plus an offset), so nothing waits. Redis expires keys by the server's own
    clock (EX/PX, stream idle times): advancing really waits, as long as asked and no more.
    """

    def __init__(self, *, server_time: bool) -> None:
        self.server_time = server_time
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Let seconds pass for the store."""
        if self.server_time:
            time.sleep(seconds)
        else:
            self.offset += seconds
