"""Scale-out back-end: all shared state in Redis, usable by any number of processes.

Key layout (every key of one family shares a hash tag, so one Lua script or MULTI stays in
one Cluster slot):

    mp:{fam}:r:<ns>:<key>     hash {d: json, v: version}      records
    mp:{fam}:i:<ns>           sorted set of keys (score 0)     record index, for scan/count
    mp:{fam}:o:<marker>       string with TTL                  once-markers of batches
    mp:{fam}:l:<log>          list                              append-only logs
    mp:{fam}:lb:<log>         string                            entries trimmed off a log's head
    mp:{ttl}:ns               set                               namespaces that hold TTL records
    mp:{fam}:c:<ns>           hash                              counters
    mp:{seen:<key>}           string with TTL                  dedup keys
    mp:{q:<queue>}:s          stream + consumer group "w"      durable queue
    mp:{q:<queue>}:d:<key>    string with TTL                  enqueue dedup keys
    mp:{q:<queue>}:x          list                              dead letters
    mp:{q:<queue>}:cur:<name> string (JSON)                     cursors (enqueue_with_cursor)
    mp:{lock:<name>}          string with TTL                  locks
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import redis

from models.errors import StoreUnavailableError
from store.base import JSON, Batch, CommitResult, QueueItem, Record, dumps, family

_GROUP = "w"
_PAGE = 1000  # index keys or stream entries read per round trip

# A dead letter back into the stream, once: only the LREM that found it adds it again.
_RETRY_DEAD = """
local n = redis.call('LREM', KEYS[1], 1, ARGV[1])
if n == 1 then redis.call('XADD', KEYS[2], '*', 'p', ARGV[2]) end
return n
"""

_PUT = """
local v = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'd', ARGV[1])
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3])
else redis.call('PERSIST', KEYS[1]) end
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return v
"""

_DELETE = """
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return n
"""

# ARGV[1]: JSON {checks: [[k, ver]], onces: [k], once_ttl, puts: [[k, ik, key, doc]],
# deletes: [[k, ik, key]], appends: [[k, entry]], incrs: [[k, field, by]]}; k = KEYS index.
# The once-markers are all looked at before any is set: one already there, nothing written.
_COMMIT = """
local op = cjson.decode(ARGV[1])
for _, c in ipairs(op.checks) do
  local v = tonumber(redis.call('HGET', KEYS[c[1]], 'v') or '0')
  if v ~= c[2] then return 'conflict' end
end
for _, o in ipairs(op.onces) do
  if redis.call('EXISTS', KEYS[o]) == 1 then return 'duplicate' end
end
for _, o in ipairs(op.onces) do
  redis.call('SET', KEYS[o], '1', 'EX', op.once_ttl)
end
for _, p in ipairs(op.puts) do
  redis.call('HINCRBY', KEYS[p[1]], 'v', 1)
  redis.call('HSET', KEYS[p[1]], 'd', p[4])
  redis.call('ZADD', KEYS[p[2]], 0, p[3])
end
for _, d in ipairs(op.deletes) do
  redis.call('DEL', KEYS[d[1]])
  redis.call('ZREM', KEYS[d[2]], d[3])
end
for _, a in ipairs(op.appends) do redis.call('RPUSH', KEYS[a[1]], a[2]) end
for _, i in ipairs(op.incrs) do redis.call('HINCRBY', KEYS[i[1]], i[2], i[3]) end
return 'ok'
"""

_ENQUEUE = """
if ARGV[2] ~= '' then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return 0 end
end
redis.call('XADD', KEYS[1], '*', 'p', ARGV[1])
return 1
"""

# KEYS[1]: the stream; KEYS[2..]: the batch's dedup keys, each once. ARGV[1]: their TTL, then
# a pair per item: the KEYS index of its dedup key (0: none), its payload. A key repeated in
# the batch finds its own SET NX from earlier in the loop: the later item is skipped.
_ENQUEUE_MANY = """
local out = {}
for i = 2, #ARGV, 2 do
  local k = tonumber(ARGV[i])
  if k > 0 and not redis.call('SET', KEYS[k], '1', 'NX', 'EX', ARGV[1]) then
    out[#out + 1] = 0
  else
    redis.call('XADD', KEYS[1], '*', 'p', ARGV[i + 1])
    out[#out + 1] = 1
  end
end
return out
"""

# _ENQUEUE_MANY, then the cursor: KEYS[#KEYS] is the cursor's key, ARGV[#ARGV] its document.
# One script, so no reader ever sees the cursor ahead of the items it covers.
_ENQUEUE_WITH_CURSOR = """
local out = {}
for i = 2, #ARGV - 1, 2 do
  local k = tonumber(ARGV[i])
  if k > 0 and not redis.call('SET', KEYS[k], '1', 'NX', 'EX', ARGV[1]) then
    out[#out + 1] = 0
  else
    redis.call('XADD', KEYS[1], '*', 'p', ARGV[i + 1])
    out[#out + 1] = 1
  end
end
redis.call('SET', KEYS[#KEYS], ARGV[#ARGV])
return out
"""

# A log's seq s is list index s - base - 1, base counting the entries trimmed off its head.
# KEYS: the list, its base. ARGV: after, limit. Returns {base, entries}.
_READ_LOG = """
local b = tonumber(redis.call('GET', KEYS[2]) or '0')
local start = math.max(tonumber(ARGV[1]) - b, 0)
return {b + start, redis.call('LRANGE', KEYS[1], start, start + tonumber(ARGV[2]) - 1)}
"""

# KEYS: the list, its base. ARGV: upto. The newest entry stays, as on SQLite.
_TRIM_LOG = """
local b = tonumber(redis.call('GET', KEYS[2]) or '0')
local n = math.min(tonumber(ARGV[1]) - b, redis.call('LLEN', KEYS[1]) - 1)
if n <= 0 then return 0 end
redis.call('LTRIM', KEYS[1], n, -1)
redis.call('INCRBY', KEYS[2], n)
return n
"""

# KEYS: the list, its base. ARGV: seq, entry, seq, entry…
_REPLACE_LOG = """
local b = tonumber(redis.call('GET', KEYS[2]) or '0')
local len = redis.call('LLEN', KEYS[1])
local n = 0
for i = 1, #ARGV, 2 do
  local at = tonumber(ARGV[i]) - b - 1
  if at >= 0 and at < len then
    redis.call('LSET', KEYS[1], at, ARGV[i + 1])
    n = n + 1
  end
end
return n
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    """All state in one Redis (or Cluster, thanks to hash tags)."""

    backend = "redis"

    def __init__(self, url: str, *, prefix: str = "mp") -> None:
        self.url = url
        self.p = prefix
        self.r: redis.Redis[str] = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5,
            health_check_interval=30, retry_on_timeout=True,
        )
        self._put_script = self.r.register_script(_PUT)
        self._delete_script = self.r.register_script(_DELETE)
        self._commit_script = self.r.register_script(_COMMIT)
        self._enqueue_script = self.r.register_script(_ENQUEUE)
        self._enqueue_many_script = self.r.register_script(_ENQUEUE_MANY)
        self._unlock_script = self.r.register_script(_UNLOCK)
        self._read_log_script = self.r.register_script(_READ_LOG)
        self._trim_log_script = self.r.register_script(_TRIM_LOG)
        self._replace_log_script = self.r.register_script(_REPLACE_LOG)
        self._retry_dead_script = self.r.register_script(_RETRY_DEAD)
        self._enqueue_cursor_script = self.r.register_script(_ENQUEUE_WITH_CURSOR)
        self._groups: set[str] = set()
        self._ttl_ns: set[str] = set()  # namespaces this process registered as holding TTLs

    # -- key names -------------------------------------------------------------
    def _rk(self, ns: str, key: str) -> str:
        return f"{self.p}:{{{family(ns)}}}:r:{ns}:{key}"

    def _ik(self, ns: str) -> str:
        return f"{self.p}:{{{family(ns)}}}:i:{ns}"

    def _lk(self, log: str) -> str:
        return f"{self.p}:{{{family(log)}}}:l:{log}"

    def _ck(self, ns: str) -> str:
        return f"{self.p}:{{{family(ns)}}}:c:{ns}"

    def _lbk(self, log: str) -> str:
        return f"{self.p}:{{{family(log)}}}:lb:{log}"

    def _ttl_set(self) -> str:
        return f"{self.p}:{{ttl}}:ns"

    def _ok(self, fam: str, marker: str) -> str:
        return f"{self.p}:{{{fam}}}:o:{marker}"

    def _qk(self, queue: str) -> str:
        return f"{self.p}:{{q:{queue}}}"

    # -- records ---------------------------------------------------------------
    def get(self, ns: str, key: str) -> Record | None:
        d, v = self._call(lambda: self.r.hmget(self._rk(ns, key), ["d", "v"]))
        if d is None:
            return None
        return Record(json.loads(d), int(v))

    def get_many(self, ns: str, keys: Sequence[str]) -> dict[str, Record]:
        out: dict[str, Record] = {}
        for i in range(0, len(keys), 500):
            chunk = list(keys[i : i + 500])
            pipe = self.r.pipeline(transaction=False)
            for k in chunk:
                pipe.hmget(self._rk(ns, k), ["d", "v"])
            rows = self._call(pipe.execute)
            for k, (d, v) in zip(chunk, rows, strict=True):
                if d is not None:
                    out[k] = Record(json.loads(d), int(v))
        return out

    def put(self, ns: str, key: str, doc: JSON, *, ttl_s: int | None = None) -> int:
        keys = [self._rk(ns, key), self._ik(ns)]
        if ttl_s and ns not in self._ttl_ns:
            # Redis expires the record but not its entry in the namespace's index: remember
            # the namespace so that purge_expired() can sweep it.
            self._call(lambda: self.r.sadd(self._ttl_set(), ns))
            self._ttl_ns.add(ns)
        return int(self._call(lambda: self._put_script(keys, [dumps(doc), key, ttl_s or 0])))

    def delete(self, ns: str, key: str) -> bool:
        keys = [self._rk(ns, key), self._ik(ns)]
        return int(self._call(lambda: self._delete_script(keys, [key]))) > 0

    def scan(self, ns: str, *, prefix: str = "") -> Iterator[tuple[str, Record]]:
        start = "[" + prefix if prefix else "-"
        end = "[" + prefix + "\U0010ffff" if prefix else "+"
        offset = 0
        while True:
            keys = self._call(
                lambda o=offset: self.r.zrangebylex(self._ik(ns), start, end, o, _PAGE))
            if not keys:
                return
            recs = self.get_many(ns, keys)
            for k in keys:
                if k in recs:
                    yield k, recs[k]
            offset += len(keys)

    def scan_page(self, ns: str, *, after: str = "", limit: int = 100
                  ) -> list[tuple[str, Record]]:
        start = "(" + after if after else "-"
        out: list[tuple[str, Record]] = []
        while len(out) < limit:
            # An index key whose record expired is skipped: read on past it.
            want = limit - len(out)
            keys = self._call(lambda st=start, n=want: self.r.zrangebylex(
                self._ik(ns), st, "+", 0, n))
            if not keys:
                break
            recs = self.get_many(ns, keys)
            out += [(k, recs[k]) for k in keys if k in recs]
            start = "(" + keys[-1]
        return out

    def count(self, ns: str) -> int:
        return int(self._call(lambda: self.r.zcard(self._ik(ns))))

    def commit(self, batch: Batch) -> CommitResult:
        fam = batch.family()
        keys: list[str] = []
        index: dict[str, int] = {}

        def k(name: str) -> int:
            if name not in index:
                keys.append(name)
                index[name] = len(keys)
            return index[name]

        op: dict[str, Any] = {
            "checks": [[k(self._rk(ns, key)), ver] for ns, key, ver in batch.checks],
            "onces": [k(self._ok(fam, m)) for m in batch.markers()],
            "once_ttl": batch.once_ttl_s,
            "puts": [[k(self._rk(ns, key)), k(self._ik(ns)), key, dumps(doc)]
                     for ns, key, doc in batch.puts],
            "deletes": [[k(self._rk(ns, key)), k(self._ik(ns)), key]
                        for ns, key in batch.deletes],
            "appends": [[k(self._lk(log)), dumps(e)] for log, e in batch.appends],
            "incrs": [[k(self._ck(ns)), key, by] for ns, key, by in batch.incrs],
        }
        # cjson decodes [] as {} and ipairs over {} is fine; empty lists stay empty.
        res = self._call(lambda: self._commit_script(keys or [self._ik(fam)], [dumps(op)]))
        return CommitResult(res)

    def seen_once(self, family: str, markers: Sequence[str]) -> set[str]:
        out: set[str] = set()
        for i in range(0, len(markers), 500):
            chunk = list(markers[i : i + 500])
            # One MGET: every marker of a family shares its hash tag, hence its slot.
            vals = self._call(lambda c=chunk: self.r.mget([self._ok(family, m) for m in c]))
            out.update(m for m, v in zip(chunk, vals, strict=True) if v is not None)
        return out

    # -- dedup -----------------------------------------------------------------
    def first_seen(self, key: str, ttl_s: int) -> bool:
        return bool(self._call(lambda: self.r.set(f"{self.p}:{{seen:{key}}}", "1", nx=True,
                                                  ex=ttl_s)))

    def forget(self, key: str) -> None:
        self._call(lambda: self.r.delete(f"{self.p}:{{seen:{key}}}"))

    def purge_expired(self) -> int:
        # Redis drops expired keys by itself; what stays is the index entry of an expired
        # record (scan skips it, count() would still count it).
        n = 0
        for ns in sorted(self._call(lambda: self.r.smembers(self._ttl_set()))):
            ik = self._ik(ns)
            start = 0
            while True:
                keys = self._call(lambda s=start, ik=ik: self.r.zrange(ik, s, s + _PAGE - 1))
                if not keys:
                    break
                pipe = self.r.pipeline(transaction=False)
                for k in keys:
                    pipe.exists(self._rk(ns, k))
                gone = [k for k, e in zip(keys, self._call(pipe.execute), strict=True) if not e]
                if gone:
                    # A record put again meanwhile is indexed again by its put (ZADD).
                    n += int(self._call(lambda ik=ik, g=gone: self.r.zrem(ik, *g)))
                if len(keys) < _PAGE:
                    break
                # What was removed shifted the rest down: the next page starts that much
                # earlier, or every page after the first skips len(gone) entries.
                start += _PAGE - len(gone)
        return n

    # -- queue -----------------------------------------------------------------
    def _ensure_group(self, queue: str) -> None:
        if queue in self._groups:
            return
        try:
            self.r.xgroup_create(self._qk(queue) + ":s", _GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._groups.add(queue)

    def enqueue(
        self, queue: str, payload: JSON, *, dedup_key: str | None = None, dedup_ttl_s: int = 0
    ) -> bool:
        q = self._qk(queue)
        keys = [q + ":s", q + ":d:" + (dedup_key or "")]
        args = [dumps(payload), str(dedup_ttl_s) if dedup_key is not None else ""]
        return int(self._call(lambda: self._enqueue_script(keys, args))) == 1

    def _enqueue_args(self, queue: str, items: Sequence[tuple[JSON, str | None]],
                      dedup_ttl_s: int) -> tuple[list[str], list[str | int]]:
        """The enqueue script's keys (the stream, then each distinct dedup key) and arguments
        (the TTL, then per item its dedup key's position, 0 for none, and its payload)."""
        q = self._qk(queue)
        keys = [q + ":s"]
        index: dict[str, int] = {}
        args: list[str | int] = [dedup_ttl_s]
        for payload, dedup_key in items:
            k = 0
            if dedup_key is not None:
                k = index.get(dedup_key, 0)
                if not k:
                    keys.append(q + ":d:" + dedup_key)
                    k = index[dedup_key] = len(keys)
            args += [k, dumps(payload)]
        # Checked here: a failing SET inside the script would leave the items before it queued.
        if index and dedup_ttl_s <= 0:
            raise ValueError("a dedup key needs dedup_ttl_s > 0")
        return keys, args

    def enqueue_many(
        self, queue: str, items: Sequence[tuple[JSON, str | None]], *, dedup_ttl_s: int = 0
    ) -> list[bool]:
        if not items:
            return []
        keys, args = self._enqueue_args(queue, items, dedup_ttl_s)
        res = self._call(lambda: self._enqueue_many_script(keys, args))
        return [int(r) == 1 for r in res]

    def enqueue_with_cursor(
        self, queue: str, items: Sequence[tuple[JSON, str | None]], *, cursor: str, doc: JSON,
        dedup_ttl_s: int = 0,
    ) -> list[bool]:
        q = self._qk(queue)
        keys, args = self._enqueue_args(queue, items, dedup_ttl_s)
        # The cursor shares the queue's hash tag: one slot, one script.
        keys.append(q + ":cur:" + cursor)
        args.append(dumps(doc))
        res = self._call(lambda: self._enqueue_cursor_script(keys, args))
        return [int(r) == 1 for r in res]

    def get_cursor(self, queue: str, cursor: str) -> JSON | None:
        raw = self._call(lambda: self.r.get(self._qk(queue) + ":cur:" + cursor))
        return None if raw is None else cast(JSON, json.loads(raw))

    def claim(
        self, queue: str, *, consumer: str, max_items: int, visibility_s: float
    ) -> list[QueueItem]:
        self._ensure_group(queue)
        s = self._qk(queue) + ":s"
        idle_ms = max(1, int(visibility_s * 1000))
        # Items a dead (or slow) consumer claimed longer ago than the visibility timeout.
        res = self._call(lambda: self.r.xautoclaim(s, _GROUP, consumer, idle_ms, "0-0",
                                                   count=max_items))
        stale = [(i, f) for i, f in res[1] if f is not None]
        out: list[QueueItem] = []
        if stale:
            pend = self._call(lambda: self.r.xpending_range(
                s, _GROUP, min=stale[0][0], max=stale[-1][0], count=len(stale) * 4 + 10,
                consumername=consumer))
            counts = {p["message_id"]: int(p["times_delivered"]) for p in pend}
            out = [QueueItem(i, json.loads(f["p"]), counts.get(i, 2)) for i, f in stale]
        if len(out) < max_items:
            fresh = self._call(lambda: self.r.xreadgroup(
                _GROUP, consumer, {s: ">"}, count=max_items - len(out)))
            for _, msgs in fresh or []:
                out += [QueueItem(i, json.loads(f["p"]), 1) for i, f in msgs]
        return out

    def ack(self, queue: str, item_ids: Sequence[str]) -> None:
        if not item_ids:
            return
        s = self._qk(queue) + ":s"
        pipe = self.r.pipeline(transaction=True)
        pipe.xack(s, _GROUP, *item_ids)
        pipe.xdel(s, *item_ids)
        self._call(pipe.execute)

    def fail(self, queue: str, item: QueueItem, *, error: str, max_attempts: int) -> bool:
        if item.attempts < max_attempts:
            # Left pending: redelivered once its visibility timeout passes.
            return False
        q = self._qk(queue)
        pipe = self.r.pipeline(transaction=True)
        pipe.rpush(q + ":x", dumps({"id": item.id, "payload": item.payload,
                                    "attempts": item.attempts, "error": error[:2000]}))
        pipe.xack(q + ":s", _GROUP, item.id)
        pipe.xdel(q + ":s", item.id)
        self._call(pipe.execute)
        return True

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[JSON]:
        rows = self._call(lambda: self.r.lrange(self._qk(queue) + ":x", 0, limit - 1))
        return [cast(JSON, json.loads(r)) for r in rows]

    def _dead_by_id(self, queue: str, item_ids: Sequence[str]) -> list[tuple[str, JSON]]:
        wanted = set(item_ids)
        rows = self._call(lambda: self.r.lrange(self._qk(queue) + ":x", 0, -1))
        out: list[tuple[str, JSON]] = []
        for raw in rows:
            doc = cast(JSON, json.loads(raw))
            if str(doc.get("id")) in wanted:
                out.append((raw, doc))
        return out

    def retry_dead(self, queue: str, item_ids: Sequence[str]) -> int:
        q = self._qk(queue)
        self._ensure_group(queue)
        n = 0
        for raw, doc in self._dead_by_id(queue, item_ids):
            # One script: only the caller whose LREM took the entry queues it again.
            n += int(self._call(lambda raw=raw, doc=doc: self._retry_dead_script(
                [q + ":x", q + ":s"], [raw, dumps(doc.get("payload") or {})])))
        return n

    def drop_dead(self, queue: str, item_ids: Sequence[str]) -> int:
        q = self._qk(queue)
        return sum(int(self._call(lambda raw=raw: self.r.lrem(q + ":x", 1, raw)))
                   for raw, _ in self._dead_by_id(queue, item_ids))

    def delete_queued(self, queue: str, *, match: Callable[[JSON], bool]) -> int:
        q = self._qk(queue)
        s = q + ":s"
        n = 0
        start = "-"
        while True:
            page = self._call(lambda st=start: self.r.xrange(s, st, "+", count=_PAGE))
            if not page:
                break
            doomed = [i for i, f in page if f is not None and match(json.loads(f["p"]))]
            if doomed:
                # XACK too: a claimed item must not stay pending in the consumer group.
                pipe = self.r.pipeline(transaction=True)
                pipe.xack(s, _GROUP, *doomed)
                pipe.xdel(s, *doomed)
                n += int(self._call(pipe.execute)[1])
            if len(page) < _PAGE:
                break
            start = "(" + page[-1][0]
        dead = self._call(lambda: self.r.lrange(q + ":x", 0, -1))
        for raw in dead:
            if match(cast(JSON, json.loads(raw).get("payload") or {})):
                n += int(self._call(lambda raw=raw: self.r.lrem(q + ":x", 1, raw)))
        return n

    def queue_depth(self, queue: str) -> int:
        return int(self._call(lambda: self.r.xlen(self._qk(queue) + ":s")))

    # -- logs ------------------------------------------------------------------
    def append(self, log: str, entries: Sequence[JSON]) -> int:
        if not entries:
            return self.log_length(log)
        # MULTI: a trim cannot slip in between the push and the read of the base.
        pipe = self.r.pipeline(transaction=True)
        pipe.rpush(self._lk(log), *[dumps(e) for e in entries])
        pipe.get(self._lbk(log))
        length, base = self._call(pipe.execute)
        return int(length) + int(base or 0)

    def read_log(self, log: str, *, after: int = 0, limit: int = 1000) -> list[tuple[int, JSON]]:
        if limit <= 0:
            return []
        first, rows = self._call(lambda: self._read_log_script(
            [self._lk(log), self._lbk(log)], [after, limit]))
        return [(int(first) + n + 1, json.loads(r)) for n, r in enumerate(rows)]

    def log_length(self, log: str) -> int:
        pipe = self.r.pipeline(transaction=True)
        pipe.llen(self._lk(log))
        pipe.get(self._lbk(log))
        length, base = self._call(pipe.execute)
        return int(length) + int(base or 0)

    def trim_log(self, log: str, *, upto: int) -> int:
        return int(self._call(lambda: self._trim_log_script(
            [self._lk(log), self._lbk(log)], [upto])))

    def replace_log_entries(self, log: str, entries: Mapping[int, JSON]) -> int:
        if not entries:
            return 0
        args: list[str | int] = []
        for seq, e in entries.items():
            args += [int(seq), dumps(e)]
        return int(self._call(lambda: self._replace_log_script(
            [self._lk(log), self._lbk(log)], args)))

    # -- counters --------------------------------------------------------------
    def incr(self, ns: str, key: str, by: int = 1) -> int:
        return int(self._call(lambda: self.r.hincrby(self._ck(ns), key, by)))

    def counters(self, ns: str) -> dict[str, int]:
        return {k: int(v) for k, v in self._call(lambda: self.r.hgetall(self._ck(ns))).items()}

    # -- locks -----------------------------------------------------------------
    @contextmanager
    def lock(self, name: str, *, ttl_s: float, wait_s: float) -> Iterator[bool]:
        key = f"{self.p}:{{lock:{name}}}"
        owner = uuid.uuid4().hex
        deadline = time.monotonic() + wait_s
        while True:
            got = bool(self._call(lambda: self.r.set(key, owner, nx=True,
                                                     px=max(1, int(ttl_s * 1000)))))
            if got or time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        try:
            yield got
        finally:
            if got:
                self._call(lambda: self._unlock_script([key], [owner]))

    # -- lifecycle -------------------------------------------------------------
    def _call(self, fn: Any) -> Any:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise StoreUnavailableError(f"redis unavailable: {e}") from e

    def ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self.r.close()
