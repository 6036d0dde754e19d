"""A queue consumer loop: claim a batch, handle each item, ack; crash-safe with the store.

Delivery is at-least-once (an item a dead consumer claimed comes back after the visibility
timeout); handlers make the *effect* exactly-once by committing it with ``Batch.once``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from store.base import QueueItem, Store

log = logging.getLogger("mingpian.consumer")

BatchHandler = Callable[[Sequence[QueueItem]], None]


@dataclass
class ConsumerStats:
    """Counts since the consumer started."""

    processed: int = 0
    failed: int = 0
    dead: int = 0
    batches: int = 0


def consume_once(  # noqa: PLR0913  keyword-only consumer knobs, each named at the call site
    store: Store,
    *,
    queue: str,
    handler: BatchHandler,
    item_handler: Callable[[QueueItem], None] | None = None,
    consumer: str,
    max_items: int = 64,
    visibility_s: float = 30.0,
    max_attempts: int = 5,
    stats: ConsumerStats | None = None,
) -> int:
    """Claim and process one batch; return how many items were claimed.

    The batch handler runs first; if it raises, items are retried one by one through
    ``item_handler`` (when given) so that one poison message cannot block its neighbours.
    """
    stats = stats or ConsumerStats()
    items = store.claim(queue, consumer=consumer, max_items=max_items, visibility_s=visibility_s)
    if not items:
        return 0
    stats.batches += 1
    try:
        handler(items)
    except Exception as e:  # noqa: BLE001 - any handler failure is retried item by item
        log.warning("batch of %d failed (%s); retrying one by one", len(items), e)
        done: list[str] = []
        for item in items:
            try:
                if item_handler is None:
                    raise
                item_handler(item)
                done.append(item.id)
            except Exception as err:  # noqa: BLE001
                stats.failed += 1
                if store.fail(queue, item, error=repr(err), max_attempts=max_attempts):
                    stats.dead += 1
                    log.error("item %s dead-lettered after %d attempts: %r",
                              item.id, item.attempts, err)
        store.ack(queue, done)
        stats.processed += len(done)
        return len(items)
    store.ack(queue, [i.id for i in items])
    stats.processed += len(items)
    return len(items)


def run_consumer(  # noqa: PLR0913  keyword-only consumer knobs, each named at the call site
    store: Store,
    *,
    queue: str,
    handler: BatchHandler,
    item_handler: Callable[[QueueItem], None] | None = None,
    consumer: str,
    stop: threading.Event,
    max_items: int = 64,
    visibility_s: float = 30.0,
    max_attempts: int = 5,
    idle_sleep_s: float = 0.05,
    stats: ConsumerStats | None = None,
) -> ConsumerStats:
    """Process the queue until stop is set; return the counts."""
    stats = stats or ConsumerStats()
    while not stop.is_set():
        try:
            n = consume_once(store, queue=queue, handler=handler, item_handler=item_handler,
                             consumer=consumer, max_items=max_items, visibility_s=visibility_s,
                             max_attempts=max_attempts, stats=stats)
        except Exception:
            log.exception("consumer loop error; retrying")
            n = 0
            stop.wait(0.5)
        if n == 0:
            stop.wait(idle_sleep_s)
    return stats


def wait_until_empty(store: Store, queue: str, *, timeout_s: float) -> bool:
    """Poll until the queue is empty; return whether it emptied in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if store.queue_depth(queue) == 0:
            return True
        time.sleep(0.02)
    return store.queue_depth(queue) == 0
