"""What every storage back-end offers: records, a durable queue, dedup keys, logs, counters.

Both back-ends (SQLite, Redis) pass one contract suite (tests/store/test_contract.py).

Namespaces are dotted (``profile.user``); the part before the first dot is the *family*.
A :class:`Batch` may only touch one family: on Redis a family is one hash tag, so the
batch's Lua script keeps all its keys in one Cluster slot.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

JSON = dict[str, Any]


def family(ns: str) -> str:
    """Return the family (hash tag) of a namespace: the part before the first dot."""
    return ns.split(".", 1)[0]


def dumps(doc: object) -> str:
    """Serialise a document compactly, keeping Chinese readable."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class Record:
    """A stored document and its version (1 after the first put, +1 per write)."""

    doc: JSON
    version: int


@dataclass(frozen=True)
class QueueItem:
    """A claimed queue item; ``attempts`` counts deliveries including this one."""

    id: str
    payload: JSON
    attempts: int


class CommitResult(StrEnum):
    """Outcome of :meth:`Store.commit`."""

    OK = "ok"
    CONFLICT = "conflict"  # a version check failed; nothing written
    DUPLICATE = "duplicate"  # the once-marker was already set; nothing written


@dataclass
class Batch:
    """Writes applied all-or-nothing by :meth:`Store.commit`.

    ``checks`` are (ns, key, expected_version) with 0 meaning "must not exist".
    ``once`` is a marker: if it was set by an earlier commit, nothing applies (so the
    effect of one queue item is applied exactly once even when it is redelivered).
    ``once_all`` are more markers, for a batch that carries the effects of many items: if
    any one of them (or ``once``) was set by an earlier commit, nothing applies and the
    commit answers DUPLICATE; otherwise every one is set. :meth:`Store.seen_once` tells
    which to leave out before trying again.
    """

    puts: list[tuple[str, str, JSON]] = field(default_factory=list)
    deletes: list[tuple[str, str]] = field(default_factory=list)
    appends: list[tuple[str, JSON]] = field(default_factory=list)
    incrs: list[tuple[str, str, int]] = field(default_factory=list)
    checks: list[tuple[str, str, int]] = field(default_factory=list)
    once: str | None = None
    once_all: list[str] = field(default_factory=list)
    once_ttl_s: int = 30 * 86_400

    def markers(self) -> list[str]:
        """Return every once-marker of the batch, each once, in order."""
        first = [self.once] if self.once is not None else []
        return list(dict.fromkeys([*first, *self.once_all]))

    def families(self) -> set[str]:
        """Return every family the batch touches."""
        names = [ns for ns, _, _ in self.puts] + [ns for ns, _ in self.deletes]
        names += [log for log, _ in self.appends] + [ns for ns, _, _ in self.incrs]
        names += [ns for ns, _, _ in self.checks]
        return {family(n) for n in names}

    def family(self) -> str:
        """Return the one family of this batch, or raise ValueError."""
        fams = self.families()
        if len(fams) != 1:
            raise ValueError(f"a batch must touch exactly one family, got {sorted(fams)}")
        return next(iter(fams))


class Store(Protocol):
    """The storage contract; see sqlite.py and redis.py."""

    # -- records -------------------------------------------------------------
    def get(self, ns: str, key: str) -> Record | None:
        """Return the record or None."""

    def get_many(self, ns: str, keys: Sequence[str]) -> dict[str, Record]:
        """Return the records that exist among keys."""

    def put(self, ns: str, key: str, doc: JSON, *, ttl_s: int | None = None) -> int:
        """Write a document unconditionally; return its new version."""

    def delete(self, ns: str, key: str) -> bool:
        """Delete a record; return whether it existed."""

    def scan(self, ns: str, *, prefix: str = "") -> Iterator[tuple[str, Record]]:
        """Yield every (key, record) of a namespace whose key starts with prefix."""

    def count(self, ns: str) -> int:
        """Return how many records a namespace holds."""

    def scan_page(self, ns: str, *, after: str = "", limit: int = 100
                  ) -> list[tuple[str, Record]]:
        """Return up to limit (key, record) pairs of a namespace with key > after, by key:
        one page of a listing, the last key of a page being the next one's ``after``."""

    def commit(self, batch: Batch) -> CommitResult:
        """Apply a batch atomically (checks, once-markers, then writes)."""

    def seen_once(self, family: str, markers: Sequence[str]) -> set[str]:
        """Return the markers among these that a committed batch of this family has set
        (and that have not expired): a commit carrying any of them would be a DUPLICATE."""

    # -- dedup keys ----------------------------------------------------------
    def first_seen(self, key: str, ttl_s: int) -> bool:
        """Mark key as seen for ttl_s; return True only the first time."""

    def forget(self, key: str) -> None:
        """Drop a dedup key (used by erasure)."""

    def purge_expired(self) -> int:
        """Delete what has expired (dedup keys, once-markers, records with a TTL, and on
        Redis the index entries of expired records); return how many went."""

    # -- durable queue -------------------------------------------------------
    def enqueue(
        self, queue: str, payload: JSON, *, dedup_key: str | None = None, dedup_ttl_s: int = 0
    ) -> bool:
        """Durably queue payload; with dedup_key, atomically skip (return False) a repeat."""

    def enqueue_many(
        self, queue: str, items: Sequence[tuple[JSON, str | None]], *, dedup_ttl_s: int = 0
    ) -> list[bool]:
        """Durably queue several payloads at once, in order, each with its optional dedup key;
        return for each whether it was queued (False: a repeat of a key already seen, including
        one earlier in the same call). All or nothing: one SQLite transaction, one Redis script.

        The same as :meth:`enqueue` item by item (same dedup keys, same stored items), but one
        durable write for the lot: the group commit of the callback path. A dedup key needs
        dedup_ttl_s > 0 (ValueError otherwise, before anything is written).
        """

    def enqueue_with_cursor(
        self, queue: str, items: Sequence[tuple[JSON, str | None]], *, cursor: str, doc: JSON,
        dedup_ttl_s: int = 0,
    ) -> list[bool]:
        """Do what :meth:`enqueue_many` does and, in the same transaction (one SQLite
        transaction, one Redis script), write doc as the queue's cursor named ``cursor``;
        return for each item whether it was queued. Items may be empty (the cursor moves
        alone). A puller that keeps its position this way never finds its cursor ahead of
        what it queued: a crash loses nothing and a re-run re-reads only what the dedup keys
        then skip (chat archive, bot/archive/)."""

    def get_cursor(self, queue: str, cursor: str) -> JSON | None:
        """Return the document last written as the queue's cursor ``cursor``, or None."""

    def claim(
        self, queue: str, *, consumer: str, max_items: int, visibility_s: float
    ) -> list[QueueItem]:
        """Claim up to max_items: new ones, or ones whose claim expired (a dead consumer).

        Every consumer of one queue must use the same visibility_s (it is a setting).
        """

    def ack(self, queue: str, item_ids: Sequence[str]) -> None:
        """Mark items done; they are never delivered again."""

    def fail(self, queue: str, item: QueueItem, *, error: str, max_attempts: int) -> bool:
        """Release a failed item for retry; dead-letter it (return True) after max_attempts."""

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[JSON]:
        """Return dead-lettered items with their last error."""

    def retry_dead(self, queue: str, item_ids: Sequence[str]) -> int:
        """Put these dead letters back in the queue as new items (attempts start over);
        return how many went back. An id that is not a dead letter (any more) is skipped,
        so two operators retrying one item queue it once."""

    def drop_dead(self, queue: str, item_ids: Sequence[str]) -> int:
        """Delete these dead letters; return how many went."""

    def delete_queued(self, queue: str, *, match: Callable[[JSON], bool]) -> int:
        """Delete every waiting, claimed or dead-lettered item whose payload match() accepts
        (erasure); return how many went. One pass over the queue: O(queue size)."""

    def queue_depth(self, queue: str) -> int:
        """Return how many items are waiting or claimed."""

    # -- append-only logs ----------------------------------------------------
    def append(self, log: str, entries: Sequence[JSON]) -> int:
        """Append entries atomically; return the sequence number (1-based) of the last."""

    def read_log(self, log: str, *, after: int = 0, limit: int = 1000) -> list[tuple[int, JSON]]:
        """Return (seq, entry) pairs with seq > after, in order."""

    def log_length(self, log: str) -> int:
        """Return the number of entries ever appended to a log (trimmed ones included)."""

    def trim_log(self, log: str, *, upto: int) -> int:
        """Drop the entries with seq <= upto, always keeping the newest one; return how many
        went. Sequence numbers never change or restart: read_log(after=s) past the trimmed
        part answers what is left, and log_length() still counts every entry ever appended."""

    def replace_log_entries(self, log: str, entries: Mapping[int, JSON]) -> int:
        """Overwrite the entries at these seqs that are still kept (erasure of personal data
        from an operational log, never the ledger); return how many were overwritten."""

    # -- counters ------------------------------------------------------------
    def incr(self, ns: str, key: str, by: int = 1) -> int:
        """Add to a counter; return its new value."""

    def counters(self, ns: str) -> dict[str, int]:
        """Return every counter of a namespace."""

    # -- locks ---------------------------------------------------------------
    def lock(self, name: str, *, ttl_s: float, wait_s: float) -> AbstractContextManager[bool]:
        """Hold a cross-process lock; yields False if it could not be had within wait_s."""

    # -- lifecycle -----------------------------------------------------------
    def ping(self) -> bool:
        """Return True when the back-end answers."""

    def close(self) -> None:
        """Release connections."""

    @property
    def backend(self) -> str:
        """Return "sqlite" or "redis"."""

