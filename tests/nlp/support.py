"""Helpers of the nlp tests: read everything a store holds, whatever the back-end."""

from __future__ import annotations

import sqlite3

from store.base import Store
from store.redis import RedisStore
from store.sqlite import SQLiteStore


def dump_store(store: Store) -> str:
    """Return every byte of state the store holds, as text (to search it for leaks)."""
    if isinstance(store, SQLiteStore):
        db = sqlite3.connect(store.path)
        try:
            out = []
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for t in tables:
                out += [repr(row) for row in db.execute(f"SELECT * FROM {t}")]
            return "\n".join(out)
        finally:
            db.close()
    assert isinstance(store, RedisStore)
    r = store.r
    out = []
    for key in r.scan_iter("*"):
        # types-redis leaves Redis.type() unannotated; the raw command answers the same.
        kind = r.execute_command("TYPE", key)
        if kind == "string":
            value: object = r.get(key)
        elif kind == "hash":
            value = r.hgetall(key)
        elif kind == "list":
            value = r.lrange(key, 0, -1)
        elif kind == "zset":
            value = r.zrange(key, 0, -1)
        elif kind == "set":
            value = r.smembers(key)
        elif kind == "stream":
            value = r.xrange(key)
        else:
            value = kind
        out.append(f"{key} {value!r}")
    return "\n".join(out)
