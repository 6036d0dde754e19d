"""A `mingpian worker` for tests/bot/test_worker_crash.py that stops inside a batch on cue.

    python -m tests.bot.crash_worker --hold-batch 2 --hold-after 16 --marker PATH

It builds the services exactly as `mingpian worker` does (from MINGPIAN_* variables) and runs
the real consumer loop; only the inbox handler is wrapped: batch number ``--hold-batch`` is
handled by the real handler for its first ``--hold-after`` items, then ``--marker`` is written
and the process waits forever with the whole batch claimed and unacknowledged. The test
SIGKILLs it then: the kill lands in the dangerous window every time, not by luck of timing.
Production code has no hook for this; the wrapper lives here.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from app.services import build_services
from app.settings import get_settings
from app.worker import run_worker
from store import QueueItem


def holding_handler(real: Callable[[Sequence[QueueItem]], None], *, hold_batch: int,
                    hold_after: int, marker: Path) -> Callable[[Sequence[QueueItem]], None]:
    """Return a handler that runs ``real`` and, in batch ``hold_batch``, stops part-way."""
    batches = 0

    def handle(items: Sequence[QueueItem]) -> None:
        nonlocal batches
        batches += 1
        if batches != hold_batch:
            real(items)
            return
        real(items[:hold_after])  # applied and committed, not acknowledged
        # Written after the commits above: the test may count them once the file exists.
        tmp = marker.with_name(marker.name + ".tmp")
        tmp.write_text(f"{os.getpid()} {len(items)}\n")
        tmp.rename(marker)
        threading.Event().wait()  # until the SIGKILL

    return handle


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hold-batch", type=int, default=2)
    ap.add_argument("--hold-after", type=int, default=16)
    ap.add_argument("--marker", type=Path, required=True)
    args = ap.parse_args(argv)
    services = build_services(get_settings())
    services = replace(services, inbox_handler=holding_handler(
        services.inbox_handler, hold_batch=args.hold_batch, hold_after=args.hold_after,
        marker=args.marker))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        run_worker(services, stop=stop)
    finally:
        services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
