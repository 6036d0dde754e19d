"""Catalog items, their embeddings and the change log in the store.

Layout (family ``catalog``, so one batch writes an item, its vector, its log entry and a
sync cursor atomically):

    catalog.item     id → {"item": <CONTRACTS §4 JSON>, "h": content hash}
    catalog.vec      id → {"h": content hash, "v": base64 float32}
    catalog.changes  log of {"id"}: one entry per write; its length is the catalog version
    catalog.meta     "epoch" → {"epoch"}: changes when the catalog is recreated
    catalog.cursor   source → sync cursor (see sync.py)
    catalog.readers  reader id → {"seq"}: how far each process's index has read the change
                     log (expires when a process stops reading); trim_changes() keeps what
                     the slowest live reader has not read, and never less than a window

The content hash covers the embedding text and the embedder's name, so an item is
re-embedded exactly when its text (or the model) changed.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from catalog.feed import IndexEntry, TextEncoder, Vectors
from models.catalog import CatalogItem, Listing
from models.vectors import decode_vector, encode_vector
from store.base import JSON, Batch, CommitResult, Record, Store
from store.retry import AGAIN, Again, retry

NS_ITEM = "catalog.item"
NS_VEC = "catalog.vec"
NS_META = "catalog.meta"
NS_CURSOR = "catalog.cursor"
NS_READERS = "catalog.readers"
CHANGES = "catalog.changes"

# The change log keeps at least this many newest entries, whatever the readers say: a
# process that restarts from a persisted index (or whose reader record expired while it had
# nothing to read) finds the changes since then still there.
CHANGES_KEEP = 10_000
READER_TTL_S = 86_400  # a reader not heard of for a day no longer holds the log back
_READER_REFRESH_S = 600.0  # a reader whose position did not move re-registers this often

_CHUNK = 256
# Past this many changes since the item cache was filled, it is emptied instead of caught up.
_CACHE_CATCH_UP = 2000
_SCAN_PAGE = 1000  # item records turned into index entries at a time
# A lost race re-diffs the chunk and may embed again: give up (ContentionError) sooner than
# the store-wide default.
_ATTEMPTS = 8


@dataclass
class UpsertStats:
    """What an upsert did."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0  # older than the stored copy (by updated_at): ignored
    embedded: int = 0  # vectors computed (the rest reused by content hash)
    changed_ids: list[str] = field(default_factory=list)

    def add(self, other: UpsertStats) -> None:
        """Accumulate another chunk's figures."""
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.stale += other.stale
        self.embedded += other.embedded
        self.changed_ids += other.changed_ids


@dataclass
class PreparedUpsert:
    """One chunk of an upsert, diffed and embedded, ready to commit."""

    batch: Batch
    stats: UpsertStats
    items: list[CatalogItem]
    extra: list[tuple[str, str, JSON]]
    vectors: dict[str, Vectors]  # by content hash: a retry embeds nothing twice


class CatalogRepo:
    """Read and write catalog items; also the index's :class:`catalog.feed.CatalogFeed`."""

    def __init__(self, store: Store, *, embedder: TextEncoder, cache_items: int = 16_384,
                 cache_listings: int = 131_072,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.embedder = embedder
        self.reader_id = uuid.uuid4().hex  # this repository's index, as a change-log reader
        self.changes_keep = CHANGES_KEEP  # newest change-log entries trim_changes() keeps
        self._clock = clock
        self._registered: tuple[int, float] | None = None  # (seq, when) last written
        # Parsed items, and their listings (what the recommender's final check reads on
        # every page view: small enough to hold a 100k catalog's), by id (issue 17).
        self._items = _VersionedCache(store, CatalogItem.from_store, limit=cache_items)
        self._listings = _VersionedCache(store, Listing.from_store, limit=cache_listings)

    # -- reading ------------------------------------------------------------------------
    def get(self, item_id: str) -> CatalogItem | None:
        """Return the item or None."""
        rec = self.store.get(NS_ITEM, item_id)
        return CatalogItem.from_store(rec.doc["item"]) if rec is not None else None

    def get_items(self, ids: Sequence[str]) -> dict[str, CatalogItem]:
        """Return the items that exist among ids, as of the catalog's current version."""
        return self._items.get(ids)

    def get_listings(self, ids: Sequence[str]) -> dict[str, Listing]:
        """Return the listings of the items that exist among ids, as of the catalog's current
        version."""
        return self._listings.get(ids)

    def get_active(self, item_id: str) -> CatalogItem | None:
        """Return the item if it exists and is active, else None."""
        item = self.get_items([item_id]).get(item_id)
        return item if item is not None and item.active else None

    def list_available(self, *, provider_id: str | None, limit: int,
                       scan: int = 500) -> list[CatalogItem]:
        """Return up to limit items, in id order, that are active and (at provider_id) in
        stock, looking at no more than the first scan items (a page's fallback, not a
        search: the recommender ranks by popularity)."""
        out: list[CatalogItem] = []
        for item in itertools.islice(self.iter_items(), scan):
            if len(out) >= limit:
                break
            if item.is_available(provider_id):
                out.append(item)
        return out

    def count(self) -> int:
        """Return how many items the catalog holds (active or not)."""
        return self.store.count(NS_ITEM)

    def iter_items(self) -> Iterator[CatalogItem]:
        """Yield every item in id order."""
        for _, rec in self.store.scan(NS_ITEM):
            yield CatalogItem.from_store(rec.doc["item"])

    # -- the feed the index follows -----------------------------------------------------
    def version(self) -> int:
        """Return the number of changes logged so far."""
        return self.store.log_length(CHANGES)

    def epoch(self) -> str:
        """Return the catalog's epoch, creating it on first use."""
        rec = self.store.get(NS_META, "epoch")
        if rec is None:
            self.store.commit(Batch(puts=[(NS_META, "epoch", {"epoch": uuid.uuid4().hex})],
                                    checks=[(NS_META, "epoch", 0)]))
            rec = self.store.get(NS_META, "epoch")
            assert rec is not None
        return str(rec.doc["epoch"])

    def changes_after(self, seq: int, *, limit: int = 1000) -> list[tuple[int, str]]:
        """Return (seq, item id) of logged changes after seq; record that this reader has
        read up to seq (trim_changes keeps what it has not)."""
        self._register(seq)
        return [(s, str(e["id"])) for s, e in self.store.read_log(CHANGES, after=seq,
                                                                    limit=limit)]

    def _register(self, seq: int) -> None:
        now = self._clock()
        last = self._registered
        if last is not None and last[0] == seq and now - last[1] < _READER_REFRESH_S:
            return
        self.store.put(NS_READERS, self.reader_id, {"seq": seq}, ttl_s=READER_TTL_S)
        self._registered = (seq, now)

    def trim_changes(self) -> int:
        """Drop change-log entries every live reader has read, keeping at least the newest
        `changes_keep`; return how many went. The log's length (the catalog version) stays."""
        upto = self.store.log_length(CHANGES) - self.changes_keep
        for _, rec in self.store.scan(NS_READERS):
            upto = min(upto, int(rec.doc.get("seq", 0)))
        return self.store.trim_log(CHANGES, upto=upto) if upto > 0 else 0

    def entries(self, ids: Sequence[str]) -> dict[str, IndexEntry]:
        """Return the items among ids that exist and have a vector of this embedder."""
        return self._entries(self.store.get_many(NS_ITEM, ids))

    def iter_entries(self) -> Iterator[IndexEntry]:
        """Yield every item with a current vector, a thousand records at a time."""
        page: dict[str, Record] = {}
        for key, rec in self.store.scan(NS_ITEM):
            page[key] = rec
            if len(page) >= _SCAN_PAGE:
                yield from self._entries(page).values()
                page = {}
        if page:
            yield from self._entries(page).values()

    def _entries(self, items: dict[str, Record]) -> dict[str, IndexEntry]:
        vecs = self.store.get_many(NS_VEC, list(items))
        out: dict[str, IndexEntry] = {}
        for key, rec in items.items():
            vec = vecs.get(key)
            if vec is None:
                continue
            item = CatalogItem.from_store(rec.doc["item"])
            # A vector counts only when it embeds this text with this process's embedder.
            if vec.doc["h"] != item.content_hash(self.embedder.name):
                continue
            out[key] = IndexEntry(item, decode_vector(vec.doc["v"], precision="float32"))
        return out

    # -- writing ------------------------------------------------------------------------
    def upsert(self, items: Sequence[CatalogItem], *,
               extra_puts: Sequence[tuple[str, str, JSON]] = ()) -> UpsertStats:
        """Write new and changed items (embedding only changed texts); skip the rest.

        ``extra_puts`` (catalog family, e.g. a sync cursor) commit atomically with the last
        chunk, so a cursor never runs ahead of the items it covers.
        """
        stats = UpsertStats()
        for prepared in self.prepare(items, extra_puts=extra_puts):
            stats.add(self.apply(prepared))
        return stats

    def prepare(self, items: Sequence[CatalogItem], *,
                extra_puts: Sequence[tuple[str, str, JSON]] = ()) -> list[PreparedUpsert]:
        """Diff items against the store and embed the changed texts; write nothing yet.

        :meth:`apply` commits the result, so a caller may embed the next page while the
        previous one is written (``mingpian sync`` does).
        """
        latest: dict[str, CatalogItem] = {}
        for it in items:  # the last copy of an id wins
            latest.pop(it.id, None)
            latest[it.id] = it
        ordered = list(latest.values())
        chunks = [ordered[i : i + _CHUNK] for i in range(0, len(ordered), _CHUNK)] or [[]]
        return [self._prepare_chunk(chunk, extra_puts if n == len(chunks) - 1 else (), {})
                for n, chunk in enumerate(chunks)]

    def apply(self, prepared: PreparedUpsert) -> UpsertStats:
        """Commit a prepared chunk; if its items changed meanwhile, diff and embed again."""

        def attempt(n: int) -> UpsertStats | Again:
            nonlocal prepared
            if n:
                prepared = self._prepare_chunk(prepared.items, prepared.extra, prepared.vectors)
            if not prepared.batch.puts or self.store.commit(prepared.batch) is CommitResult.OK:
                return prepared.stats
            return AGAIN

        return retry(attempt, what="this catalog upsert", attempts=_ATTEMPTS)

    def _prepare_chunk(self, chunk: Sequence[CatalogItem],
                       extra: Sequence[tuple[str, str, JSON]],
                       vectors: dict[str, Vectors]) -> PreparedUpsert:
        name = self.embedder.name
        stats = UpsertStats()
        existing = self.store.get_many(NS_ITEM, [it.id for it in chunk])
        batch = Batch(puts=list(extra))
        need: dict[str, str] = {}
        writes: list[tuple[CatalogItem, str, int]] = []
        for it in chunk:
            h = it.content_hash(name)
            doc = it.to_json()
            rec = existing.get(it.id)
            if rec is not None:
                old = rec.doc["item"]
                if old == doc and rec.doc.get("h") == h:
                    stats.unchanged += 1
                    continue
                old_ts, new_ts = old.get("updated_at"), doc.get("updated_at")
                if old_ts and new_ts and _ts(new_ts) < _ts(old_ts):
                    stats.stale += 1
                    continue
            if (rec is None or rec.doc.get("h") != h) and h not in vectors:
                need[h] = it.embedding_text()
            writes.append((it, h, rec.version if rec is not None else 0))
        if need:
            encoded = self.embedder.encode(list(need.values()))
            vectors.update(zip(need.keys(), encoded, strict=True))
            stats.embedded += len(need)
        for it, h, version in writes:
            rec = existing.get(it.id)
            batch.puts.append((NS_ITEM, it.id, {"item": it.to_json(), "h": h}))
            if rec is None or rec.doc.get("h") != h:
                text = encode_vector(vectors[h], precision="float32")
                batch.puts.append((NS_VEC, it.id, {"h": h, "v": text}))
            batch.appends.append((CHANGES, {"id": it.id}))
            batch.checks.append((NS_ITEM, it.id, version))
            if rec is None:
                stats.created += 1
            else:
                stats.updated += 1
            stats.changed_ids.append(it.id)
        return PreparedUpsert(batch=batch, stats=stats, items=list(chunk), extra=list(extra),
                              vectors=vectors)

    def delete(self, item_id: str) -> bool:
        """Remove an item; return whether it existed."""

        def attempt(_: int) -> bool | Again:
            rec = self.store.get(NS_ITEM, item_id)
            if rec is None:
                return False
            batch = Batch(deletes=[(NS_ITEM, item_id), (NS_VEC, item_id)],
                          appends=[(CHANGES, {"id": item_id})],
                          checks=[(NS_ITEM, item_id, rec.version)])
            return True if self.store.commit(batch) is CommitResult.OK else AGAIN

        return retry(attempt, what=f"the deletion of item {item_id!r}", attempts=_ATTEMPTS)

    # -- sync cursors -------------------------------------------------------------------
    def get_cursor(self, source: str) -> JSON | None:
        """Return the sync cursor stored for a source."""
        rec = self.store.get(NS_CURSOR, source)
        return rec.doc if rec is not None else None

    @staticmethod
    def cursor_put(source: str, cursor: JSON) -> tuple[str, str, JSON]:
        """Return the put that stores a cursor (for upsert's extra_puts)."""
        return (NS_CURSOR, source, cursor)


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s)


_T = TypeVar("_T")


class _VersionedCache(Generic[_T]):
    """Values parsed from item records, by id, valid as of the catalog version they were
    filled at: the recommender checks the same items on every page view. Every write of an
    item appends its id to the change log in the same commit, so one read of the log's
    length tells whether any cached value may have changed, and the entries since say
    which (issue 17)."""

    def __init__(self, store: Store, parse: Callable[[dict[str, Any]], _T], *,
                 limit: int) -> None:
        self._store = store
        self._parse = parse
        self._limit = limit
        self._values: dict[str, _T] = {}
        self._at = -1
        self._lock = threading.Lock()

    def get(self, ids: Sequence[str]) -> dict[str, _T]:
        """Return the values of the items that exist among ids."""
        cached, version = self._current()
        out: dict[str, _T] = {}
        missing: list[str] = []
        for i in ids:
            hit = cached.get(i)
            if hit is not None:
                out[i] = hit
            else:
                missing.append(i)
        if not missing:
            return out
        got = {k: self._parse(r.doc["item"])
               for k, r in self._store.get_many(NS_ITEM, missing).items()}
        with self._lock:
            # Read after `version`, so never older than it; but once the cache has moved
            # on (and dropped what changed since), it may be: then it is not kept.
            if self._at == version:
                for k, value in got.items():
                    if len(cached) >= self._limit:
                        del cached[next(iter(cached))]  # the oldest entry
                    cached[k] = value
        return out | got

    def _current(self) -> tuple[dict[str, _T], int]:
        """Return the cache, with every item changed since it was filled dropped, and the
        catalog version it is now at."""
        version = self._store.log_length(CHANGES)
        with self._lock:
            if version == self._at:
                return self._values, version
            changes = (self._store.read_log(CHANGES, after=self._at, limit=_CACHE_CATCH_UP + 1)
                       if 0 <= self._at < version else None)
            if (changes is None or len(changes) > _CACHE_CATCH_UP
                    or (changes and changes[0][0] != self._at + 1)):
                # Too far behind (or the log was trimmed past us, or restarted): start over.
                self._values = {}
            else:
                for _, entry in changes:
                    self._values.pop(str(entry["id"]), None)
            self._at = version
            return self._values, version
