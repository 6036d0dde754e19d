"""A daemon thread that follows the catalog: one step every poll_s until stopped.

The vector index and the lexical index both follow the catalog's change log this way; a
failing step is logged and tried again at the next tick, never fatal.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("mingpian.nlp")


class Poller:
    """Run `step` every `poll_s` seconds in a daemon thread (and once at once if asked)."""

    def __init__(self, name: str, step: Callable[[], object]) -> None:
        self.name = name
        self.step = step
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _tick(self) -> None:
        try:
            self.step()
        except Exception:
            log.exception("%s: step failed; retrying", self.name)

    def start(self, *, poll_s: float, first_now: bool = False) -> None:
        """Start the thread (a second call does nothing); `first_now` runs a step at once."""
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            if first_now:
                self._tick()
            while not self._stop.wait(poll_s):
                self._tick()

        self._thread = threading.Thread(target=loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait (up to 5 s) for its step in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
