"""A stop signal sets the verb's stop event even when it arrives while the main thread holds
the event's own lock — the moment at which a handler calling Event.set() deadlocks the
process for ever (a `mingpian worker` stuck on SIGTERM was found that way)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from app.signals import stop_on_signals


def test_signal_sets_stop_while_main_thread_holds_the_event_lock() -> None:
    stop = threading.Event()
    before = signal.getsignal(signal.SIGUSR1)
    try:
        stop_on_signals(stop, signals=(signal.SIGUSR1,))
        cond: Any = vars(stop)["_cond"]  # what Event.wait holds between its steps
        with cond:
            # The handler runs here, in this thread, with the lock held: a handler that
            # called stop.set() would wait for this thread for ever.
            signal.raise_signal(signal.SIGUSR1)
            assert not stop.is_set()  # set by the watcher thread, once the lock is free
        assert stop.wait(10)
    finally:
        signal.signal(signal.SIGUSR1, before)
