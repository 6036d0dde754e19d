"""Bounded storage (issue 12 point 5): what expires is deleted, what only grows is trimmed.

Every `purge_interval_s` one process (the first to claim the interval's slot, whichever
worker or embedded `serve` it is) deletes expired dedup keys, once-markers and TTL records,
trims the catalog change log past every live index, caps the reply log, and deletes card
visits past their retention. Once-markers keep the TTL their writer chose: an order's marker
(10 years, cards/orders.py) still guards against a late replay of the mall's webhook.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.services import Services

log = logging.getLogger("mingpian.purge")


@dataclass(frozen=True)
class PurgeReport:
    """What one purge deleted."""

    expired: int  # dedup keys, once-markers, TTL records (and their Redis index entries)
    changes: int  # catalog change-log entries every index had read
    replies: int  # reply-log entries past the cap
    visits: int  # card visits past the retention


def purge_once(services: Services) -> PurgeReport:
    """Purge now, in this process; return what went."""
    expired = services.store.purge_expired()
    changes = services.catalog.trim_changes()
    replies = services.bot.replier.purge()
    visits = services.cards.purge_visits()
    report = PurgeReport(expired=expired, changes=changes, replies=replies, visits=visits)
    log.info("purged %d expired keys, %d change-log entries, %d reply-log entries, %d visits",
             expired, changes, replies, visits)
    return report


def claim_slot(services: Services, *, interval_s: float,
               clock: Callable[[], float] = time.time) -> bool:
    """Return True for the one process that claims this interval's purge (a dedup key)."""
    slot = int(clock() // interval_s)
    return services.store.first_seen(f"purge-slot:{slot}", max(1, math.ceil(interval_s * 2)))


def run_purger(services: Services, *, stop: threading.Event,
               interval_s: float | None = None) -> int:
    """Purge every interval until stop is set (the first one interval after the start);
    return how many purges this process ran."""
    every = interval_s if interval_s is not None else services.settings.purge_interval_s
    runs = 0
    if every <= 0:  # purging switched off
        return runs
    while not stop.wait(every):
        try:
            if claim_slot(services, interval_s=every):
                purge_once(services)
                runs += 1
        except Exception:  # a failed purge is retried next interval
            log.exception("purge failed; retrying in %.0f s", every)
    return runs


def start_purger(services: Services, *, stop: threading.Event) -> threading.Thread:
    """Start the purge thread of this process; it ends when stop is set."""
    t = threading.Thread(target=run_purger, args=(services,), kwargs={"stop": stop},
                         name="mingpian-purge", daemon=True)
    t.start()
    return t
