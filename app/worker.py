"""Queue consumers: `mingpian worker`, and the in-process consumer of embedded `serve`."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence

from app.metrics import Metrics
from app.purge import start_purger
from app.services import INBOX, Services
from app.settings import Settings
from app.tag_job import start_tag_sync
from nlp.embed import CachedEmbedder, load_embedder
from store import QueueItem
from store.consumer import ConsumerStats, run_consumer

log = logging.getLogger("mingpian.worker")


def consumer_name() -> str:
    """Return a name unique to this process, for the queue's bookkeeping."""
    return f"{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}"


def handle_inbox(services: Services, items: Sequence[QueueItem]) -> None:
    """Process a batch of inbox items (chat messages and platform events)."""
    services.inbox_handler(items)


def run_worker(services: Services, *, stop: threading.Event,
               metrics: Metrics | None = None) -> ConsumerStats:
    """Consume the inbox, and purge on schedule (app/purge.py), until stop is set; count
    what was processed and dead-lettered into metrics when given."""
    s = services.settings
    log.info("worker %s consuming %r (%s back-end)", consumer_name(), INBOX,
             services.store.backend)
    # Every consumer also purges; one per interval does the work (a slot claim in the store).
    purger = start_purger(services, stop=stop)
    tag_sync = start_tag_sync(services, stop=stop)  # WeCom tags from interests (issue 15)
    try:
        return run_consumer(
            services.store, queue=INBOX, consumer=consumer_name(), stop=stop,
            handler=lambda items: handle_inbox(services, items),
            item_handler=lambda item: handle_inbox(services, [item]),
            max_items=s.worker_batch, visibility_s=s.queue_visibility_s,
            max_attempts=s.queue_max_attempts,
            stats=metrics.consumer_stats(INBOX) if metrics is not None else None,
        )
    finally:
        stop.set()  # run_consumer only returns once stop is set, or on an error
        purger.join(timeout=10)
        if tag_sync is not None:
            tag_sync.join(timeout=10)


def start_background_worker(services: Services, *, metrics: Metrics | None = None
                            ) -> tuple[threading.Thread, threading.Event]:
    """Start the in-process consumer thread; return it and its stop event."""
    stop = threading.Event()
    t = threading.Thread(target=run_worker, args=(services,),
                         kwargs={"stop": stop, "metrics": metrics},
                         name="mingpian-worker", daemon=True)
    t.start()
    return t, stop


def consumer_embedder(settings: Settings) -> CachedEmbedder | None:
    """Return the model the embedded consumer of `mingpian serve` tags with: the settings'
    embedder in ``worker_embedder_processes`` child processes, as `mingpian worker` runs it;
    None when serve runs no consumer (Redis, or embedded_worker off), the setting is 0, or
    the embedder is the hashing stand-in.

    Acknowledgements never wait on tagging (issue 17): in the serving process the model
    held the GIL for whole batches while the event loop waited to answer a callback."""
    if not settings.embedded_worker or settings.redis_url:
        return None
    if settings.worker_embedder_processes <= 0 or settings.embedder.startswith("hash"):
        return None
    log.info("embedded consumer: the model in %d child processes",
             settings.worker_embedder_processes)
    return load_embedder(settings.embedder, threads=settings.embedder_threads or 1,
                         child_processes=settings.worker_embedder_processes)
