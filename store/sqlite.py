"""Embedded back-end: one SQLite file in WAL mode, safe across threads and processes."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import cast

from store.base import JSON, Batch, CommitResult, QueueItem, Record, dumps

log = logging.getLogger("mingpian.store")

# Background checkpoints (SQLiteStore(background_checkpoint=True)): how often, and the WAL size
# past which a RESTART checkpoint (briefly holding writers back) makes the WAL start over.
CHECKPOINT_INTERVAL_S = 0.2
WAL_LIMIT_BYTES = 64 << 20
RESTART_WAIT_MS = 250
# Every commit fsyncs the WAL before it returns. An acknowledged callback ("success") is a
# promise: under NORMAL a commit reached only the OS, and an OS crash or power loss could
# drop it (issue 12). One setting for every write, not just the queue's and the ledger's:
# they share connections and the WAL, and an fsync covers every frame before it anyway;
# group commit (store/groupcommit.py) makes concurrent callbacks share one. Benchmarks may
# set "NORMAL" here to measure the difference (bench/bench_callback.py); nothing else should.
SYNCHRONOUS = "FULL"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
  ns TEXT NOT NULL, key TEXT NOT NULL, doc TEXT NOT NULL, version INTEGER NOT NULL,
  expires_at REAL, PRIMARY KEY (ns, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue (
  id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, payload TEXT NOT NULL,
  dead INTEGER NOT NULL DEFAULT 0, claimed_by TEXT, claimed_until REAL NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0, error TEXT, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS queue_ready ON queue (queue, dead, claimed_until, id);
CREATE TABLE IF NOT EXISTS logs (
  log TEXT NOT NULL, seq INTEGER NOT NULL, entry TEXT NOT NULL, PRIMARY KEY (log, seq))
  WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
  ns TEXT NOT NULL, key TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (ns, key))
  WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS locks (name TEXT PRIMARY KEY, owner TEXT NOT NULL,
  expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursors (queue TEXT NOT NULL, name TEXT NOT NULL,
  doc TEXT NOT NULL, PRIMARY KEY (queue, name)) WITHOUT ROWID;
"""


class _Checkpointer:
    """A daemon thread that checkpoints the WAL, so that no commit has to.

    SQLite's auto-checkpoint runs inside whichever commit crosses 1000 WAL pages, and its
    fsync stalls that request for milliseconds. Here a thread with its own connection runs a
    PASSIVE checkpoint (it waits for nobody) each interval once something was committed, and a
    RESTART one when the WAL outgrows its limit: writers then wait a moment, but the WAL starts
    over instead of growing for as long as writes never pause.
    """

    def __init__(self, path: Path, *, interval_s: float, limit_bytes: int) -> None:
        self.pid = os.getpid()
        self.interval_s = interval_s
        self.limit_bytes = limit_bytes
        self.stopping = threading.Event()
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        self.frame_bytes = int(self.db.execute("PRAGMA page_size").fetchone()[0]) + 24
        self.thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        last = -1
        behind = True
        while not self.stopping.wait(self.interval_s):
            try:
                # data_version changes when another connection commits: a cheap "anything new?".
                version = int(self.db.execute("PRAGMA data_version").fetchone()[0])
                if version != last or behind:
                    last = version
                    behind = self.checkpoint()
            except sqlite3.Error as e:
                log.warning("background checkpoint failed: %s", e)
                behind = True

    def checkpoint(self, *, final: bool = False) -> bool:
        """Checkpoint once; return whether WAL frames are left to copy."""
        busy, frames, done = self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if final or frames * self.frame_bytes > self.limit_bytes:
            mode = "TRUNCATE" if final else "RESTART"
            self.db.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
            try:
                busy, frames, done = self.db.execute(
                    f"PRAGMA wal_checkpoint({mode})").fetchone()
            finally:
                self.db.execute("PRAGMA busy_timeout=30000")
        return bool(busy) or done < frames

    def halt(self) -> None:
        """Ask the thread to stop (it finishes the checkpoint in hand)."""
        self.stopping.set()

    def close(self) -> None:
        """Stop the thread, checkpoint what is left, close the connection."""
        self.halt()
        self.thread.join(timeout=10)
        try:
            self.checkpoint(final=True)
        except sqlite3.Error as e:
            log.warning("final checkpoint failed: %s", e)
        finally:
            self.db.close()


class _WriterLock:
    """Writers of every process take turns here, before BEGIN IMMEDIATE.

    Without it, a writer that finds the database locked is left to SQLite's busy handler,
    which sleeps 1, 2, 5, 10… ms between tries: two serving processes then stall each
    other's acknowledgements for milliseconds. A thread lock (threads of one process) and an
    flock on a sidecar file (other processes) queue writers in the kernel instead, and the
    next one goes the moment the last commits.
    """

    def __init__(self, path: Path) -> None:
        # An in-memory database is one connection's own: no other process to queue behind.
        self.path = None if str(path) == ":memory:" else path.with_name(path.name + ".writer-lock")
        self.threads = threading.Lock()
        self.fd = -1
        self.pid = -1

    @contextmanager
    def held(self) -> Iterator[None]:
        with self.threads:
            if self.path is None:
                yield
                return
            if self.pid != os.getpid():  # first use, or a forked child: a file of our own
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                self.pid = os.getpid()
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self.threads:
            if self.pid == os.getpid():
                os.close(self.fd)
            self.fd, self.pid = -1, -1


class SQLiteStore:
    """The default store: zero set-up, one file under the data directory.

    With background_checkpoint, commits never checkpoint the WAL themselves (no fsync on the
    request path); a thread of this store does it instead. Serving processes want that.
    """

    backend = "sqlite"

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time,
                 background_checkpoint: bool = False) -> None:
        self.path = path
        self.clock = clock
        self.background_checkpoint = background_checkpoint and str(path) != ":memory:"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._checkpointer: _Checkpointer | None = None
        self._writer = _WriterLock(path)
        self._conn().executescript(_SCHEMA)

    # -- connections -----------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "pid", None) != os.getpid():
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
            db.execute("PRAGMA busy_timeout=30000")
            if self.background_checkpoint:
                db.execute("PRAGMA wal_autocheckpoint=0")
            self._local.db = db
            self._local.pid = os.getpid()
            with self._all_lock:
                self._all.append(db)
                if self.background_checkpoint:
                    self._start_checkpointer()
        return db

    def _start_checkpointer(self) -> None:
        # Once per process: a forked child inherits neither the thread nor (safely) its
        # connection, and without one its WAL would never be checkpointed.
        ck = self._checkpointer
        if ck is not None and ck.pid == os.getpid() and not ck.stopping.is_set():
            return
        ck = _Checkpointer(self.path, interval_s=CHECKPOINT_INTERVAL_S,
                           limit_bytes=WAL_LIMIT_BYTES)
        weakref.finalize(self, ck.halt)  # a store dropped unclosed stops its thread
        self._checkpointer = ck

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        with self._writer.held():
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- records ---------------------------------------------------------------
    def get(self, ns: str, key: str) -> Record | None:
        row = self._conn().execute(
            "SELECT doc, version, expires_at FROM records WHERE ns=? AND key=?", (ns, key)
        ).fetchone()
        if row is None or (row[2] is not None and row[2] <= self.clock()):
            return None
        return Record(json.loads(row[0]), row[1])

    def get_many(self, ns: str, keys: Sequence[str]) -> dict[str, Record]:
        out: dict[str, Record] = {}
        now = self.clock()
        db = self._conn()
        for i in range(0, len(keys), 500):
            chunk = list(keys[i : i + 500])
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT key, doc, version, expires_at FROM records WHERE ns=? AND key IN ({marks})",
                (ns, *chunk),
            ).fetchall()
            for key, doc, version, exp in rows:
                if exp is None or exp > now:
                    out[key] = Record(json.loads(doc), version)
        return out

    def put(self, ns: str, key: str, doc: JSON, *, ttl_s: int | None = None) -> int:
        with self._tx() as db:
            return self._put(db, ns, key, doc, ttl_s)

    def _put(self, db: sqlite3.Connection, ns: str, key: str, doc: JSON, ttl_s: int | None) -> int:
        exp = self.clock() + ttl_s if ttl_s else None
        row = db.execute(
            "INSERT INTO records (ns, key, doc, version, expires_at) VALUES (?,?,?,1,?) "
            "ON CONFLICT (ns, key) DO UPDATE SET doc=excluded.doc, version=version+1, "
            "expires_at=excluded.expires_at RETURNING version",
            (ns, key, dumps(doc), exp),
        ).fetchone()
        return int(row[0])

    def delete(self, ns: str, key: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM records WHERE ns=? AND key=?", (ns, key)).rowcount > 0

    def scan(self, ns: str, *, prefix: str = "") -> Iterator[tuple[str, Record]]:
        now = self.clock()
        last = prefix
        first = True
        while True:
            op = ">=" if first else ">"
            rows = self._conn().execute(
                f"SELECT key, doc, version, expires_at FROM records WHERE ns=? AND key {op} ? "
                "ORDER BY key LIMIT 1000",
                (ns, last),
            ).fetchall()
            first = False
            if not rows:
                return
            for key, doc, version, exp in rows:
                if not key.startswith(prefix):
                    return
                if exp is None or exp > now:
                    yield key, Record(json.loads(doc), version)
            last = rows[-1][0]

    def scan_page(self, ns: str, *, after: str = "", limit: int = 100
                  ) -> list[tuple[str, Record]]:
        now = self.clock()
        rows = self._conn().execute(
            "SELECT key, doc, version, expires_at FROM records WHERE ns=? AND key > ? "
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY key LIMIT ?",
            (ns, after, now, max(0, limit)),
        ).fetchall()
        return [(k, Record(json.loads(d), v)) for k, d, v, _ in rows]

    def count(self, ns: str) -> int:
        row = self._conn().execute(
            "SELECT COUNT(*) FROM records WHERE ns=? AND (expires_at IS NULL OR expires_at > ?)",
            (ns, self.clock()),
        ).fetchone()
        return int(row[0])

    def commit(self, batch: Batch) -> CommitResult:
        batch.family()
        now = self.clock()
        markers = ["once:" + m for m in batch.markers()]
        with self._tx() as db:
            if not self._versions_match(db, batch.checks, now):
                return CommitResult.CONFLICT
            if markers:
                # All or none: BEGIN IMMEDIATE holds the write lock, so looking first and
                # setting after cannot race another commit.
                if self._live_marks(db, markers, now):
                    return CommitResult.DUPLICATE
                db.executemany(
                    "INSERT INTO seen (key, expires_at) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET expires_at=excluded.expires_at",
                    [(m, now + batch.once_ttl_s) for m in markers])
            if batch.puts:
                db.executemany(
                    "INSERT INTO records (ns, key, doc, version, expires_at) "
                    "VALUES (?,?,?,1,NULL) ON CONFLICT (ns, key) DO UPDATE SET "
                    "doc=excluded.doc, version=version+1, expires_at=NULL",
                    [(ns, key, dumps(doc)) for ns, key, doc in batch.puts])
            for ns, key in batch.deletes:
                db.execute("DELETE FROM records WHERE ns=? AND key=?", (ns, key))
            for log, entry in batch.appends:
                self._append(db, log, [entry])
            for ns, key, by in batch.incrs:
                self._incr(db, ns, key, by)
        return CommitResult.OK

    def _versions_match(self, db: sqlite3.Connection, checks: Sequence[tuple[str, str, int]],
                        now: float) -> bool:
        if len(checks) == 1:  # the common case: one query, no IN list
            ns, key, expected = checks[0]
            row = db.execute(
                "SELECT version FROM records WHERE ns=? AND key=? "
                "AND (expires_at IS NULL OR expires_at > ?)", (ns, key, now)
            ).fetchone()
            return (row[0] if row else 0) == expected
        by_ns: dict[str, dict[str, int]] = {}
        for ns, key, expected in checks:
            by_ns.setdefault(ns, {})[key] = expected
        for ns, wanted in by_ns.items():
            keys = list(wanted)
            found: dict[str, int] = {}
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                marks = ",".join("?" * len(chunk))
                found.update(db.execute(
                    f"SELECT key, version FROM records WHERE ns=? AND key IN ({marks}) "
                    "AND (expires_at IS NULL OR expires_at > ?)", (ns, *chunk, now)
                ).fetchall())
            if any(found.get(k, 0) != v for k, v in wanted.items()):
                return False
        # A key checked twice with two versions cannot match both.
        return all(by_ns[ns][key] == expected for ns, key, expected in checks)

    def _live_marks(self, db: sqlite3.Connection, keys: Sequence[str], now: float) -> set[str]:
        out: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = list(keys[i : i + 500])
            marks = ",".join("?" * len(chunk))
            out.update(k for (k,) in db.execute(
                f"SELECT key FROM seen WHERE key IN ({marks}) AND expires_at > ?", (*chunk, now)))
        return out

    def seen_once(
        self, family: str,  # noqa: ARG002  the Store signature: Redis keeps a family per slot
        markers: Sequence[str],
    ) -> set[str]:
        # One table holds the markers of every family here (SQLite has no slots to keep).
        live = self._live_marks(self._conn(), ["once:" + m for m in markers], self.clock())
        return {m[5:] for m in live}

    # -- dedup -----------------------------------------------------------------
    def _mark(self, db: sqlite3.Connection, key: str, ttl_s: int) -> bool:
        now = self.clock()
        db.execute("DELETE FROM seen WHERE key=? AND expires_at <= ?", (key, now))
        cur = db.execute(
            "INSERT OR IGNORE INTO seen (key, expires_at) VALUES (?, ?)", (key, now + ttl_s)
        )
        return cur.rowcount == 1

    def first_seen(self, key: str, ttl_s: int) -> bool:
        with self._tx() as db:
            return self._mark(db, key, ttl_s)

    def forget(self, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM seen WHERE key=?", (key,))

    def purge_expired(self) -> int:
        """Delete expired dedup keys and records; return how many went."""
        now = self.clock()
        # Found by a read (WAL: it holds no writer back), deleted in short transactions of
        # 1000 by primary key: a week of dedup keys is one scan, not one long write lock that
        # stalls every callback. The expiry is checked again: a key set anew meanwhile stays.
        db = self._conn()
        seen = [k for (k,) in db.execute("SELECT key FROM seen WHERE expires_at <= ?", (now,))]
        recs = db.execute("SELECT ns, key FROM records WHERE expires_at IS NOT NULL "
                          "AND expires_at <= ?", (now,)).fetchall()
        n = self._delete_in_chunks("DELETE FROM seen WHERE expires_at <= ? AND key IN ({})",
                                   (now,), seen)
        for i in range(0, len(recs), 500):
            with self._tx() as tx:
                n += sum(tx.execute("DELETE FROM records WHERE ns=? AND key=? AND expires_at "
                                    "IS NOT NULL AND expires_at <= ?", (ns, key, now)).rowcount
                         for ns, key in recs[i : i + 500])
        return n

    # -- queue -----------------------------------------------------------------
    def enqueue(
        self, queue: str, payload: JSON, *, dedup_key: str | None = None, dedup_ttl_s: int = 0
    ) -> bool:
        with self._tx() as db:
            if dedup_key is not None and not self._mark(db, f"q:{queue}:{dedup_key}",
                                                        dedup_ttl_s):
                return False
            db.execute(
                "INSERT INTO queue (queue, payload, created) VALUES (?,?,?)",
                (queue, dumps(payload), self.clock()),
            )
        return True

    def enqueue_many(
        self, queue: str, items: Sequence[tuple[JSON, str | None]], *, dedup_ttl_s: int = 0
    ) -> list[bool]:
        if not items:
            return []
        keys = [None if k is None else f"q:{queue}:{k}" for _, k in items]
        wanted = list(dict.fromkeys(k for k in keys if k is not None))
        if wanted and dedup_ttl_s <= 0:
            raise ValueError("a dedup key needs dedup_ttl_s > 0")
        # Serialised before BEGIN IMMEDIATE: the write lock is held only for the SQL.
        docs = [dumps(payload) for payload, _ in items]
        with self._tx() as db:
            return self._enqueue_rows(db, queue, keys, docs, dedup_ttl_s)

    def enqueue_with_cursor(
        self, queue: str, items: Sequence[tuple[JSON, str | None]], *, cursor: str, doc: JSON,
        dedup_ttl_s: int = 0,
    ) -> list[bool]:
        keys = [None if k is None else f"q:{queue}:{k}" for _, k in items]
        if any(k is not None for k in keys) and dedup_ttl_s <= 0:
            raise ValueError("a dedup key needs dedup_ttl_s > 0")
        docs = [dumps(payload) for payload, _ in items]
        cursor_doc = dumps(doc)
        with self._tx() as db:
            out = self._enqueue_rows(db, queue, keys, docs, dedup_ttl_s) if items else []
            db.execute("INSERT INTO cursors (queue, name, doc) VALUES (?,?,?) "
                       "ON CONFLICT (queue, name) DO UPDATE SET doc=excluded.doc",
                       (queue, cursor, cursor_doc))
        return out

    def get_cursor(self, queue: str, cursor: str) -> JSON | None:
        row = self._conn().execute("SELECT doc FROM cursors WHERE queue=? AND name=?",
                                   (queue, cursor)).fetchone()
        return None if row is None else cast(JSON, json.loads(row[0]))

    def _enqueue_rows(self, db: sqlite3.Connection, queue: str, keys: Sequence[str | None],
                      docs: Sequence[str], dedup_ttl_s: int) -> list[bool]:
        """Queue serialised payloads inside a transaction, skipping repeats of their dedup
        keys (store-wide names); return for each whether it was queued."""
        wanted = list(dict.fromkeys(k for k in keys if k is not None))
        now = self.clock()
        # Look first, set after: the write lock makes that race-free (as in commit).
        taken = self._live_marks(db, wanted, now) if wanted else set()
        fresh: list[str] = []
        out: list[bool] = []
        rows: list[tuple[str, str, float]] = []
        for key, doc in zip(keys, docs, strict=True):
            if key is not None:
                if key in taken:
                    out.append(False)
                    continue
                taken.add(key)
                fresh.append(key)
            out.append(True)
            rows.append((queue, doc, now))
        if fresh:
            # An expired row of the same key is overwritten, as _mark would replace it.
            db.executemany(
                "INSERT INTO seen (key, expires_at) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET expires_at=excluded.expires_at",
                [(k, now + dedup_ttl_s) for k in fresh])
        if rows:
            db.executemany("INSERT INTO queue (queue, payload, created) VALUES (?,?,?)", rows)
        return out

    def claim(
        self, queue: str, *, consumer: str, max_items: int, visibility_s: float
    ) -> list[QueueItem]:
        now = self.clock()
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, payload, attempts FROM queue WHERE queue=? AND dead=0 "
                "AND claimed_until <= ? ORDER BY id LIMIT ?",
                (queue, now, max_items),
            ).fetchall()
            if not rows:
                return []
            ids = [r[0] for r in rows]
            marks = ",".join("?" * len(ids))
            db.execute(
                f"UPDATE queue SET claimed_by=?, claimed_until=?, attempts=attempts+1 "
                f"WHERE id IN ({marks})",
                (consumer, now + visibility_s, *ids),
            )
        return [QueueItem(str(i), json.loads(p), a + 1) for i, p, a in rows]

    def ack(self, queue: str, item_ids: Sequence[str]) -> None:
        if not item_ids:
            return
        marks = ",".join("?" * len(item_ids))
        with self._tx() as db:
            db.execute(f"DELETE FROM queue WHERE queue=? AND id IN ({marks})",
                       (queue, *[int(i) for i in item_ids]))

    def fail(self, queue: str, item: QueueItem, *, error: str, max_attempts: int) -> bool:
        dead = item.attempts >= max_attempts
        with self._tx() as db:
            db.execute(
                "UPDATE queue SET dead=?, claimed_until=0, error=? WHERE queue=? AND id=?",
                (1 if dead else 0, error[:2000], queue, int(item.id)),
            )
        return dead

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[JSON]:
        rows = self._conn().execute(
            "SELECT id, payload, attempts, error FROM queue WHERE queue=? AND dead=1 "
            "ORDER BY id LIMIT ?", (queue, limit)
        ).fetchall()
        return [{"id": str(i), "payload": json.loads(p), "attempts": a, "error": e}
                for i, p, a, e in rows]

    def retry_dead(self, queue: str, item_ids: Sequence[str]) -> int:
        ids = [int(i) for i in item_ids if str(i).isdigit()]
        # The item keeps its id (its place in the queue's order) and starts over.
        return self._delete_in_chunks(
            "UPDATE queue SET dead=0, attempts=0, error=NULL, claimed_by=NULL, "
            "claimed_until=0 WHERE queue=? AND dead=1 AND id IN ({})", (queue,), ids)

    def drop_dead(self, queue: str, item_ids: Sequence[str]) -> int:
        ids = [int(i) for i in item_ids if str(i).isdigit()]
        return self._delete_in_chunks("DELETE FROM queue WHERE queue=? AND dead=1 AND id IN ({})",
                                      (queue,), ids)

    def delete_queued(self, queue: str, *, match: Callable[[JSON], bool]) -> int:
        # Read outside the write lock (a long queue must not hold callbacks back), delete by
        # id after: ids never change, and an item acked meanwhile is simply not there.
        doomed: list[int] = []
        last = 0
        db = self._conn()
        while True:
            rows = db.execute("SELECT id, payload FROM queue WHERE queue=? AND id > ? "
                              "ORDER BY id LIMIT 1000", (queue, last)).fetchall()
            if not rows:
                break
            doomed += [int(i) for i, p in rows if match(json.loads(p))]
            last = int(rows[-1][0])
        return self._delete_in_chunks("DELETE FROM queue WHERE queue=? AND id IN ({})",
                                      (queue,), doomed)

    def _delete_in_chunks(self, sql: str, params: tuple[object, ...],
                          keys: Sequence[object], chunk: int = 500) -> int:
        """Run sql (its IN list as {}) for keys, chunk by chunk, each in a short transaction
        of its own so that no callback waits behind one long write; return rows changed."""
        n = 0
        for i in range(0, len(keys), chunk):
            part = keys[i : i + chunk]
            with self._tx() as tx:
                n += tx.execute(sql.format(",".join("?" * len(part))), (*params, *part)).rowcount
        return n

    def queue_depth(self, queue: str) -> int:
        row = self._conn().execute(
            "SELECT COUNT(*) FROM queue WHERE queue=? AND dead=0", (queue,)
        ).fetchone()
        return int(row[0])

    # -- logs ------------------------------------------------------------------
    def _append(self, db: sqlite3.Connection, log: str, entries: Sequence[JSON]) -> int:
        row = db.execute("SELECT COALESCE(MAX(seq), 0) FROM logs WHERE log=?", (log,)).fetchone()
        seq = int(row[0])
        for e in entries:
            seq += 1
            db.execute("INSERT INTO logs (log, seq, entry) VALUES (?,?,?)", (log, seq, dumps(e)))
        return seq

    def append(self, log: str, entries: Sequence[JSON]) -> int:
        with self._tx() as db:
            return self._append(db, log, entries)

    def read_log(self, log: str, *, after: int = 0, limit: int = 1000) -> list[tuple[int, JSON]]:
        rows = self._conn().execute(
            "SELECT seq, entry FROM logs WHERE log=? AND seq > ? ORDER BY seq LIMIT ?",
            (log, after, limit),
        ).fetchall()
        return [(int(s), json.loads(e)) for s, e in rows]

    def log_length(self, log: str) -> int:
        row = self._conn().execute(
            "SELECT COALESCE(MAX(seq), 0) FROM logs WHERE log=?", (log,)
        ).fetchone()
        return int(row[0])

    def trim_log(self, log: str, *, upto: int) -> int:
        with self._tx() as db:
            # The newest entry stays: _append numbers on from MAX(seq).
            return db.execute(
                "DELETE FROM logs WHERE log=? AND seq <= ? AND seq < "
                "(SELECT MAX(seq) FROM logs WHERE log=?)", (log, upto, log)).rowcount

    def replace_log_entries(self, log: str, entries: Mapping[int, JSON]) -> int:
        if not entries:
            return 0
        with self._tx() as db:
            return sum(db.execute("UPDATE logs SET entry=? WHERE log=? AND seq=?",
                                  (dumps(e), log, int(seq))).rowcount
                       for seq, e in entries.items())

    # -- counters --------------------------------------------------------------
    def _incr(self, db: sqlite3.Connection, ns: str, key: str, by: int) -> int:
        row = db.execute(
            "INSERT INTO counters (ns, key, value) VALUES (?,?,?) ON CONFLICT (ns, key) "
            "DO UPDATE SET value=value+excluded.value RETURNING value",
            (ns, key, by),
        ).fetchone()
        return int(row[0])

    def incr(self, ns: str, key: str, by: int = 1) -> int:
        with self._tx() as db:
            return self._incr(db, ns, key, by)

    def counters(self, ns: str) -> dict[str, int]:
        rows = self._conn().execute("SELECT key, value FROM counters WHERE ns=?", (ns,)).fetchall()
        return {k: int(v) for k, v in rows}

    # -- locks -----------------------------------------------------------------
    @contextmanager
    def lock(self, name: str, *, ttl_s: float, wait_s: float) -> Iterator[bool]:
        owner = uuid.uuid4().hex
        deadline = time.monotonic() + wait_s
        got = False
        while True:
            with self._tx() as db:
                now = self.clock()
                db.execute("DELETE FROM locks WHERE name=? AND expires_at <= ?", (name, now))
                got = db.execute(
                    "INSERT OR IGNORE INTO locks (name, owner, expires_at) VALUES (?,?,?)",
                    (name, owner, now + ttl_s),
                ).rowcount == 1
            if got or time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        try:
            yield got
        finally:
            if got:
                with self._tx() as db:
                    db.execute("DELETE FROM locks WHERE name=? AND owner=?", (name, owner))

    # -- lifecycle -------------------------------------------------------------
    def ping(self) -> bool:
        try:
            self._conn().execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    def close(self) -> None:
        with self._all_lock:
            ck, self._checkpointer = self._checkpointer, None
            if ck is not None and ck.pid == os.getpid():
                ck.halt()
            for db in self._all:
                with suppress(sqlite3.Error):
                    db.close()
            self._all.clear()
        self._local = threading.local()
        self._writer.close()
        if ck is not None and ck.pid == os.getpid():
            ck.close()
