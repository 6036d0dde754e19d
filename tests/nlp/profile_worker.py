"""A worker process for the concurrency tests: applies a range of messages to one user's and
one group's profiles on a shared store, as fast as it can, one by one or in batches."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from models.messages import ChatMessage
from nlp.profile import ProfileRepo
from nlp.tagging import TagHit, TagResult
from store.base import Store


def main() -> None:
    backend, target, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    start_at = float(sys.argv[5])
    batch = int(sys.argv[6]) if len(sys.argv) > 6 else 0  # 0: one message per apply()
    store: Store
    if backend == "redis":
        from store.redis import RedisStore

        store = RedisStore(target)
    else:
        from store.sqlite import SQLiteStore

        store = SQLiteStore(Path(target))
    repo = ProfileRepo(store, half_life_days=30)
    vec = np.ones(8, dtype=np.float32) / np.sqrt(8)
    applied = 0
    items = []
    for i in range(first, last):
        msg = ChatMessage(msg_id=f"m{i}", user_id="u-hot", group_id="g-hot", text="",
                          ts=1_764_000_000 + i)
        tags = [TagHit("睡眠", 0.5)] if i % 2 else []
        items.append((msg, TagResult(tags=tags, vector=vec, contentless=False)))
    while time.time() < start_at:  # start together, so that the processes really race
        time.sleep(0.001)
    if batch:
        for i in range(0, len(items), batch):
            applied += sum(repo.apply_many(items[i:i + batch]))
    else:
        for msg, result in items:
            applied += repo.apply(msg=msg, result=result)
    store.close()
    print(applied, repo.conflicts)


if __name__ == "__main__":
    main()
