"""Stopping a long-running verb (`mingpian worker`, `archive pull --follow`) on SIGINT/SIGTERM
without the deadlock a plain ``signal.signal(sig, lambda *_: stop.set())`` invites.

A Python signal handler runs in the main thread between two bytecodes. When the main thread
is inside ``Event.wait`` (or any other method of the event) it may hold the event's internal
lock at that moment; ``Event.set`` in the handler then waits for that lock — held by the very
thread it runs on — for ever (seen: a `mingpian worker` stuck on SIGTERM, its main thread
three handlers deep in ``Condition.__enter__``). Here the handler only writes a byte to a
pipe; a watcher thread reads it and sets the event like any other thread would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterable
from types import FrameType


def stop_on_signals(stop: threading.Event,
                    signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM)
                    ) -> None:
    """Set stop when one of signals arrives (call from the main thread, once)."""
    r, w = os.pipe()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):  # only a byte into a pipe: no lock, no allocation
            os.write(w, b"\0")

    def watch() -> None:
        os.read(r, 1)
        stop.set()

    threading.Thread(target=watch, name="mingpian-signals", daemon=True).start()
    for sig in signals:
        signal.signal(sig, on_signal)
