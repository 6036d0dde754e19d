"""Behaviour signals the recommender reads: popularity (views, clicks, orders) per provider
and overall, decaying with time, and what each user bought (from the cards domain's order
events), with when each consumable may be recommended again.

Layout (family ``reco``):

    reco.pop.e<N>             counters  item → popularity, all providers, in epoch N
    reco.pop.e<N>@<provider>  counters  item → popularity at one provider, in epoch N
    reco.events               counters  "<view|click|order>:<item>" → raw count
    reco.bought               records   user → {"items": {item: ts}, "again": {item: ts},
                                        "n": {item: orders that count}}

Popularity decays (issue 15 point 7): an event of weight w at time t adds
w · 2^((t − start)/H) to the counters of the current epoch (start: the epoch's first second,
H: the half-life), so counters stay integers that are only ever incremented (exactly-once
through a batch's once-marker), and ranking by them ranks by w · 2^(−age/H). An epoch lasts
8 half-lives, so an increment stays under w · 256 · scale; a read adds the previous epoch's
counters at 2^−8 and ignores older epochs (what they hold is at least 8 half-lives old).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from store.base import JSON, Batch, CommitResult, Record, Store
from store.retry import AGAIN, Again, retry

Event = Literal["view", "click", "order"]

# An order says far more than a click, a click more than a view.
WEIGHTS: dict[str, int] = {"view": 1, "click": 3, "order": 10}

NS_POP = "reco.pop"
NS_EVENTS = "reco.events"
NS_BOUGHT = "reco.bought"
POP_HALF_LIFE_DAYS = 30.0
_EPOCH_HALF_LIVES = 8
_SCALE = 1000  # popularity units per unit of weight at an epoch's start
_RANKINGS_KEPT = 1024  # cached popularity rankings (one per provider); past this, start over

RepurchaseDays = Callable[[Sequence[str]], Mapping[str, int]]  # items → their interval, days


def _pop_ns(provider_id: str | None, epoch: int) -> str:
    base = f"{NS_POP}.e{epoch}"
    return base if provider_id is None else f"{base}@{provider_id}"


class Signals:
    """Record and read popularity and purchases; popular lists are cached for ``ttl_s``."""

    def __init__(self, store: Store, *, ttl_s: float = 2.0,
                 half_life_days: float = POP_HALF_LIFE_DAYS,
                 repurchase_days: RepurchaseDays | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.half_life_s = half_life_days * 86_400.0
        self.epoch_s = self.half_life_s * _EPOCH_HALF_LIVES
        # The catalog's repurchase intervals (issue 15 point 7); None: bought is bought.
        self.repurchase_days = repurchase_days
        self.clock = clock
        self._cache: dict[str | None, tuple[float, list[tuple[str, int]]]] = {}
        self._lock = threading.Lock()

    # -- popularity -------------------------------------------------------------------
    def popularity_incrs(self, event: Event, item_ids: Sequence[str], *,
                         provider_id: str | None = None, ts: float | None = None,
                         sign: int = 1) -> list[tuple[str, str, int]]:
        """Return the counter increments of one event per item at ts (now when None),
        overall and at provider_id; sign -1 takes one back (a refunded order)."""
        now = self.clock()
        epoch = int(now // self.epoch_s)
        at = now if ts is None else float(ts)
        amount = sign * round(WEIGHTS[event] * _SCALE
                              * math.pow(2.0, (at - epoch * self.epoch_s) / self.half_life_s))
        out: list[tuple[str, str, int]] = []
        for item_id in item_ids:
            out.append((_pop_ns(None, epoch), item_id, amount))
            if provider_id is not None:
                out.append((_pop_ns(provider_id, epoch), item_id, amount))
            out.append((NS_EVENTS, f"{event}:{item_id}", sign))
        return out

    def record(self, event: Event, item_ids: Sequence[str], *,
               provider_id: str | None = None, ts: float | None = None,
               once: str | None = None) -> bool:
        """Count one event per item, overall and at provider_id, at ts (now when None);
        with ``once``, at most once per marker. Return whether it was counted now."""
        batch = Batch(incrs=self.popularity_incrs(event, item_ids, provider_id=provider_id,
                                                  ts=ts), once=once)
        if not batch.incrs:
            return False
        return self.store.commit(batch) is CommitResult.OK

    def events(self, item_id: str) -> dict[str, int]:
        """Return the raw view/click/order counts of an item."""
        counts = self.store.counters(NS_EVENTS)
        return {e: counts.get(f"{e}:{item_id}", 0) for e in WEIGHTS}

    def popular(self, provider_id: str | None = None) -> list[tuple[str, int]]:
        """Return (item, decayed popularity), most popular first (cached a moment)."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(provider_id)
            if hit is not None and now - hit[0] < self.ttl_s:
                return hit[1]
        epoch = int(self.clock() // self.epoch_s)
        scores = {k: float(v) for k, v in self.store.counters(_pop_ns(provider_id, epoch)).items()}
        for k, v in self.store.counters(_pop_ns(provider_id, epoch - 1)).items():
            scores[k] = scores.get(k, 0.0) + v * 2.0 ** -_EPOCH_HALF_LIVES
        ranked = sorted(((k, round(v)) for k, v in scores.items() if round(v) > 0),
                        key=lambda kv: (-kv[1], kv[0]))
        with self._lock:
            if len(self._cache) > _RANKINGS_KEPT:
                self._cache.clear()
            self._cache[provider_id] = (now, ranked)
        return ranked

    # -- purchases --------------------------------------------------------------------
    def bought_doc(self, rec: Record | None, item_ids: Sequence[str], *, ts: int,
                   bought: bool = True) -> JSON:
        """Return the user's purchases record with these items bought once more at ts, or
        (bought=False, a refunded order) once less: an item stays bought while an order of
        it counts, and a consumable is excluded until its repurchase interval from its
        latest purchase has passed."""
        doc = rec.doc if rec is not None else {}
        items: dict[str, int] = dict(doc.get("items", {}))
        again: dict[str, int] = dict(doc.get("again", {}))
        # How many counted orders bought each item (a record from before counts had one).
        n: dict[str, int] = {i: int(doc.get("n", {}).get(i, 1)) for i in items}
        if not bought:
            for i in item_ids:
                n[i] = n.get(i, 0) - 1
                if n[i] <= 0:
                    for d in (items, again, n):
                        d.pop(i, None)
            return {"items": items, "again": again, "n": n}
        days = self.repurchase_days(item_ids) if self.repurchase_days is not None else {}
        for i in item_ids:
            items[i] = max(int(items.get(i, 0)), ts)
            n[i] = n.get(i, 0) + 1
            if days.get(i):
                again[i] = max(int(again.get(i, 0)), ts + int(days[i]) * 86_400)
            else:
                again.pop(i, None)
        return {"items": items, "again": again, "n": n}

    def record_purchases(self, user_id: str, item_ids: Sequence[str], *,
                         ts: int | None = None) -> None:
        """Remember that the user bought these items (never recommended to them again, or
        a consumable not before its repurchase interval has passed)."""
        if not item_ids:
            return
        stamp = int(ts if ts is not None else self.clock())

        def attempt(_: int) -> Again | None:
            rec = self.store.get(NS_BOUGHT, user_id)
            # A set, as far as this path goes: a repeat of what is known changes nothing.
            if rec is not None and all(
                    int(rec.doc.get("items", {}).get(i, -1)) >= stamp for i in item_ids):
                return None
            doc = self.bought_doc(rec, item_ids, ts=stamp)
            batch = Batch(puts=[(NS_BOUGHT, user_id, doc)],
                          checks=[(NS_BOUGHT, user_id, rec.version if rec else 0)])
            return None if self.store.commit(batch) is CommitResult.OK else AGAIN

        retry(attempt, what=f"purchases of {user_id}", attempts=16)

    def bought(self, user_id: str | None) -> frozenset[str]:
        """Return the items the user bought that are still left out of recommendations
        (a consumable comes back once its repurchase interval has passed)."""
        if user_id is None:
            return frozenset()
        rec = self.store.get(NS_BOUGHT, user_id)
        if rec is None:
            return frozenset()
        return still_excluded(rec.doc, now=self.clock())

    def forget_user(self, user_id: str) -> None:
        """Erase what we know the user bought (PIPL erasure)."""
        self.store.delete(NS_BOUGHT, user_id)


def still_excluded(doc: JSON, *, now: float) -> frozenset[str]:
    """Return the items of a purchases record not to recommend at now: every item bought,
    less the consumables whose repurchase time (``again``) has come."""
    again: dict[str, int] = doc.get("again") or {}
    return frozenset(i for i in doc.get("items", {}) if i not in again or again[i] > now)
