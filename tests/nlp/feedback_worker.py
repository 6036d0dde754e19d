"""A process of the feedback race test (tests/nlp/test_feedback.py): feeds every event of
40 orders (paid, and a full refund of every fourth) to the learner in its own shuffled
order, as fast as it can, racing the other processes that feed the same events."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from catalog.repo import CatalogRepo
from nlp.embed import HashEmbedder
from nlp.feedback import Feedback, OrderSignal
from nlp.profile import ProfileRepo
from nlp.signals import Signals
from store.base import Store

T0 = 1_764_000_000
ITEMS = ("diapers", "stroller", "cereal")
ORDERS = 40


def events() -> list[OrderSignal]:
    """Every order's paid event, and a full refund of every fourth order."""
    out = []
    for i in range(ORDERS):
        for refunded in (False, True) if i % 4 == 0 else (False,):
            out.append(OrderSignal(order_id=f"o-{i}", user_id="mall-1",
                                   item_ids=(ITEMS[i % 3],), provider_id="sh-01", ts=T0,
                                   refunded=refunded))
    return out


def _open(backend: str, target: str) -> Store:
    if backend == "redis":
        from store.redis import RedisStore

        return RedisStore(target)
    from store.sqlite import SQLiteStore

    return SQLiteStore(Path(target))


def main() -> None:
    backend, target, seed, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    store = _open(backend, target)
    feedback = Feedback(store, profiles=ProfileRepo(store, half_life_days=30, clock=lambda: T0),
                        signals=Signals(store, clock=lambda: T0),
                        items=CatalogRepo(store, embedder=HashEmbedder()))
    todo = events()
    random.Random(seed).shuffle(todo)
    while time.time() < start_at:  # start together, so that the processes really race
        time.sleep(0.001)
    for sig in todo:
        feedback.learn_order(sig)
    store.close()


if __name__ == "__main__":
    main()
