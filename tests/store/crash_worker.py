"""A queue consumer run as its own process by test_crash.py.

Each item's effect (a counter increment) is committed with the item's once-marker, then the
batch is acked. With CRASH_AT=N it writes READY_FILE after committing its N-th effect, in the
middle of a batch, and waits there to be SIGKILLed.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from store import Batch, QueueItem, open_store
from store.consumer import run_consumer


def main() -> int:
    backend, target, queue = sys.argv[1], sys.argv[2], sys.argv[3]
    crash_at = int(os.environ.get("CRASH_AT", "0"))
    ready = Path(os.environ.get("READY_FILE", "/dev/null"))
    store = open_store(redis_url=target if backend == "redis" else None,
                       data_dir=Path(target))
    done = 0

    def handle(items: Sequence[QueueItem]) -> None:
        nonlocal done
        for n, item in enumerate(items):
            store.commit(Batch(incrs=[("effects.applied", str(item.payload["n"]), 1)],
                               once=f"effect:{item.payload['n']}"))
            done += 1
            if crash_at and done == crash_at:
                assert 0 < n + 1 < len(items), "the crash must fall inside a batch"
                ready.write_text(str(done))
                time.sleep(3600)

    stop = threading.Event()
    threading.Timer(float(os.environ.get("RUN_FOR", "60")), stop.set).start()
    try:
        run_consumer(store, queue=queue, handler=handle, consumer=f"w-{os.getpid()}",
                     stop=stop, max_items=20, visibility_s=1.0, idle_sleep_s=0.02)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
