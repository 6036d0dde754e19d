"""Behaviour signals the recommender reads: popularity (views, clicks, orders) per provider
and overall, and what each user already bought (from the cards domain's order events).

Layout (family ``reco``):

    reco.pop             counters  item → weighted popularity, all providers
    reco.pop@<provider>  counters  item → weighted popularity at one provider
    reco.events          counters  "<view|click|order>:<item>" → raw count
    reco.bought          records   user → {"items": {item: ts}}
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Literal

from store.base import Batch, CommitResult, Store
from store.retry import AGAIN, Again, retry

Event = Literal["view", "click", "order"]

# An order says far more than a click, a click more than a view.
WEIGHTS: dict[str, int] = {"view": 1, "click": 3, "order": 10}

NS_POP = "reco.pop"
NS_EVENTS = "reco.events"
NS_BOUGHT = "reco.bought"
_RANKINGS_KEPT = 1024  # cached popularity rankings (one per provider); past this, start over


def _pop_ns(provider_id: str | None) -> str:
    return NS_POP if provider_id is None else f"{NS_POP}@{provider_id}"


class Signals:
    """Record and read popularity and purchases; popular lists are cached for ``ttl_s``."""

    def __init__(self, store: Store, *, ttl_s: float = 2.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[str | None, tuple[float, list[tuple[str, int]]]] = {}
        self._lock = threading.Lock()

    # -- popularity -------------------------------------------------------------------
    def record(self, event: Event, item_ids: Sequence[str], *,
               provider_id: str | None = None) -> None:
        """Count one event per item, overall and at provider_id."""
        w = WEIGHTS[event]
        batch = Batch()
        for item_id in item_ids:
            batch.incrs.append((NS_POP, item_id, w))
            if provider_id is not None:
                batch.incrs.append((_pop_ns(provider_id), item_id, w))
            batch.incrs.append((NS_EVENTS, f"{event}:{item_id}", 1))
        if batch.incrs:
            self.store.commit(batch)

    def events(self, item_id: str) -> dict[str, int]:
        """Return the raw view/click/order counts of an item."""
        counts = self.store.counters(NS_EVENTS)
        return {e: counts.get(f"{e}:{item_id}", 0) for e in WEIGHTS}

    def popular(self, provider_id: str | None = None) -> list[tuple[str, int]]:
        """Return (item, weighted count), most popular first (cached a moment)."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(provider_id)
            if hit is not None and now - hit[0] < self.ttl_s:
                return hit[1]
        counts = self.store.counters(_pop_ns(provider_id))
        ranked = sorted(((k, v) for k, v in counts.items() if v > 0),
                        key=lambda kv: (-kv[1], kv[0]))
        with self._lock:
            if len(self._cache) > _RANKINGS_KEPT:
                self._cache.clear()
            self._cache[provider_id] = (now, ranked)
        return ranked

    # -- purchases --------------------------------------------------------------------
    def record_purchases(self, user_id: str, item_ids: Sequence[str], *,
                         ts: int | None = None) -> None:
        """Remember that the user bought these items (they are never recommended again)."""
        if not item_ids:
            return
        stamp = int(ts if ts is not None else time.time())

        def attempt(_: int) -> Again | None:
            rec = self.store.get(NS_BOUGHT, user_id)
            items = dict(rec.doc.get("items", {})) if rec is not None else {}
            fresh = [i for i in item_ids if i not in items]
            if not fresh:
                return None
            for i in fresh:
                items[i] = stamp
            batch = Batch(puts=[(NS_BOUGHT, user_id, {"items": items})],
                          checks=[(NS_BOUGHT, user_id, rec.version if rec else 0)])
            return None if self.store.commit(batch) is CommitResult.OK else AGAIN

        retry(attempt, what=f"purchases of {user_id}", attempts=16)

    def bought(self, user_id: str | None) -> frozenset[str]:
        """Return the items the user bought."""
        if user_id is None:
            return frozenset()
        rec = self.store.get(NS_BOUGHT, user_id)
        return frozenset(rec.doc.get("items", {})) if rec is not None else frozenset()

    def forget_user(self, user_id: str) -> None:
        """Erase what we know the user bought (PIPL erasure)."""
        self.store.delete(NS_BOUGHT, user_id)
