"""Issue 12 point 7: an acknowledged message survives an OS crash or power loss.

SQLite only: the guarantee is PRAGMA synchronous=FULL (the WAL fsynced at every commit) on
the connections that write. Redis's is its own configuration (appendfsync), see README."""

from __future__ import annotations

import threading
from pathlib import Path

from app.services import INBOX
from store.base import Batch
from store.sqlite import SQLiteStore
from tests.bot.support import bot_app, bot_settings, message_xml, wecom_post

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def _levels(store: SQLiteStore) -> list[int]:
    """The synchronous level of every connection the store opened (one per thread)."""
    # Private on purpose: which connection wrote is the store's business, and every one of
    # them must be durable.
    return [int(db.execute("PRAGMA synchronous").fetchone()[0]) for db in store._all]


def test_point7_queue_commits_are_synchronous_full(tmp_path: Path) -> None:
    with bot_app(bot_settings(tmp_path / "data")) as (client, services):
        query, body = wecom_post(message_xml(content="宝宝六个月了，辅食先加什么好？"))
        r = client.post("/wecom/callback", params=query, content=body)
        assert r.status_code == 200  # acknowledged: the queue commit has returned
        store = services.store
        assert isinstance(store, SQLiteStore)
        assert store.queue_depth(INBOX) == 1
        # The acknowledgement's commit ran on the group-commit thread, over a connection of
        # its own; this thread's read opened another: both, and any other, are FULL.
        levels = _levels(store)
        assert len(levels) >= 2 and levels == [FULL] * len(levels), levels


def test_point7_ledger_commits_are_synchronous_full(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db", background_checkpoint=True)
    try:
        # A ledger entry is a log append committed with its balance (cards/ledger.py), from
        # whichever thread serves the order webhook.
        def write() -> None:
            store.commit(Batch(appends=[("plan.ledger", {"order_id": "o1", "amount_cents": 690})],
                               incrs=[("plan.balances", "u-1", 690)]))

        t = threading.Thread(target=write)
        t.start()
        t.join()
        assert store.log_length("plan.ledger") == 1
        levels = _levels(store)
        assert len(levels) >= 2 and levels == [FULL] * len(levels), levels
    finally:
        store.close()
