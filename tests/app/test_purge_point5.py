"""Issue 12 point 5: storage stays bounded. Expired dedup keys, once-markers and TTL records
are deleted, the catalog change log and the reply log are trimmed, on a schedule, by one
purger per interval across processes."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.purge import PurgeReport, purge_once
from app.services import build_services
from app.worker import run_worker
from bot.replies import REPLY_LOG
from catalog.repo import CHANGES
from catalog_sync.loader import demo_catalog_path
from models.catalog import CatalogItem
from store.redis import RedisStore
from store.sqlite import SQLiteStore
from tests.bot.fake_wecom import FakeWeCom
from tests.bot.support import (
    bot_app,
    bot_settings,
    drain,
    wecom_app_config,
)
from tests.conftest import API_KEY

KEY = {"X-API-Key": API_KEY}
DAY = 86_400
STEPS, PER_STEP, GROUPS = 10, 200, 20


class Clock:
    """The store's clock, moved by the test (no sleeping through TTLs)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _rows(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        return {t: int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                for t in ("seen", "queue", "logs", "records", "counters")}
    finally:
        db.close()


def test_point5_tables_stay_bounded_under_steady_stream(tmp_path: Path,
                                                        fake: FakeWeCom) -> None:
    clock = Clock(time.time())
    store = SQLiteStore(tmp_path / "data" / "store.db", clock=clock)
    settings = bot_settings(
        tmp_path / "data", dedup_ttl_days=1,
        wecom=wecom_app_config(fake),
        reply={"quiet_start_hour": 0, "quiet_end_hour": 0})
    with bot_app(settings, store=store) as (client, services):
        services.bot.replier.clock = clock
        services.bot.replier.log_keep = 50
        services.catalog.changes_keep = 50
        lines = demo_catalog_path().read_text(encoding="utf-8").splitlines()
        items = [CatalogItem.model_validate(json.loads(x)) for x in lines]
        services.catalog.upsert(items)
        services.index.refresh()
        history: list[dict[str, int]] = []
        reports: list[PurgeReport] = []
        for step in range(STEPS):
            # 200 messages from 50 members in 20 groups, each group @-mentioning the bot once.
            batch = [{"msg_id": f"s{step}-{n}", "platform": "wecom",
                      "group_id": f"g-{n % GROUPS}", "user_id": f"u-{n % 50}",
                      "text": "@名片助手 宝宝辅食推荐哪个？" if n < GROUPS else "今天天气不错",
                      "ts": int(clock())} for n in range(PER_STEP)]
            r = client.post("/v1/messages", json={"messages": batch}, headers=KEY)
            assert r.json()["accepted"] == PER_STEP, r.text
            drain(services)
            # The mall edits 30 items; the index follows the change log.
            edited = [it.model_copy(update={"title": f"{it.title} · {step}"})
                      for it in items[:30]]
            services.catalog.upsert(edited)
            services.index.refresh()
            clock.now += 10 * DAY  # past the dedup keys' TTL (1 day), a third of the markers'
            reports.append(purge_once(services))
            history.append(_rows(store.path))
        assert len(fake.sent("/cgi-bin/appchat/send")) == STEPS * GROUPS
        assert store.log_length(REPLY_LOG) == STEPS * GROUPS
        assert services.catalog.version() == len(items) + 30 * STEPS
    # What was written: 2,000 dedup keys, 2,000 profile markers, 200 replies' keys and
    # records, 300 catalog changes. What is held after each purge stays flat.
    assert sum(r.expired for r in reports) > 3_000
    assert sum(r.changes for r in reports) > 0 and sum(r.replies for r in reports) > 0
    for rows in history:
        # Live markers: the last 30 days of messages (3 steps); dedup keys: none (1 day).
        assert rows["seen"] <= 3 * PER_STEP + GROUPS * 3, history
        assert rows["queue"] == 0
        assert rows["logs"] <= 50 + 50, history  # the change log and the reply log
    print("rows held after each purge:", history)
    # Records: profiles, groups, catalog; the reply-rate records expired and went.
    assert history[-1]["records"] <= history[1]["records"], history


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    return str(request.getfixturevalue("clean_redis_url")) if backend == "redis" else None


def test_point5_purge_runs_on_schedule(store_url: str | None, tmp_path: Path) -> None:
    settings = bot_settings(tmp_path / "data", redis_url=store_url, purge_interval_s=0.1)
    clock = Clock(time.time())
    store = None if store_url else SQLiteStore(tmp_path / "data" / "store.db", clock=clock)
    services = build_services(settings, store=store)
    st = services.store
    try:
        # A record that expires, and on SQLite a dedup key past its TTL (the store's clock).
        st.put("tokens.test", "short", {"v": 1}, ttl_s=1)
        st.put("tokens.test", "kept", {"v": 2})
        st.first_seen("dedup:old", 60)
        clock.now += 120
        stop = threading.Event()
        # `mingpian worker` (and embedded serve's background worker) run run_worker.
        worker = threading.Thread(target=run_worker, args=(services,), kwargs={"stop": stop})
        worker.start()
        try:
            deadline = time.monotonic() + 20
            while not _purged(st):
                assert time.monotonic() < deadline, "nothing was purged"
                time.sleep(0.05)
        finally:
            stop.set()
            worker.join(timeout=20)
        assert not worker.is_alive()
    finally:
        services.close()


def _purged(st: object) -> bool:
    if isinstance(st, RedisStore):
        # Redis expired the record itself; the purge drops its entry in the index.
        return int(st.r.zcard(st._ik("tokens.test"))) == 1
    assert isinstance(st, SQLiteStore)
    db = sqlite3.connect(st.path)
    try:
        left = db.execute("SELECT COUNT(*) FROM seen WHERE key='dedup:old'").fetchone()[0]
        recs = db.execute("SELECT COUNT(*) FROM records WHERE ns='tokens.test'").fetchone()[0]
        return int(left) == 0 and int(recs) == 1
    finally:
        db.close()


def test_point5_embedded_serve_purges(tmp_path: Path) -> None:
    settings = bot_settings(tmp_path / "data", purge_interval_s=0.1, embedded_worker=True)
    clock = Clock(time.time())
    store = SQLiteStore(tmp_path / "data" / "store.db", clock=clock)
    services = build_services(settings, store=store)
    try:
        store.first_seen("dedup:old", 60)
        clock.now += 120
        with TestClient(create_app(settings, services=services)):
            deadline = time.monotonic() + 20
            while not _purged_key(store):
                assert time.monotonic() < deadline, "embedded serve did not purge"
                time.sleep(0.05)
    finally:
        services.close()


def _purged_key(store: SQLiteStore) -> bool:
    db = sqlite3.connect(store.path)
    try:
        return int(db.execute("SELECT COUNT(*) FROM seen WHERE key='dedup:old'").fetchone()[0]) == 0
    finally:
        db.close()


def test_point5_change_log_keeps_what_a_reader_has_not_read(tmp_path: Path) -> None:
    settings = bot_settings(tmp_path / "data")
    services = build_services(settings)
    try:
        cat = services.catalog
        assert cat is not None
        cat.changes_keep = 0
        lines = demo_catalog_path().read_text(encoding="utf-8").splitlines()
        items = [CatalogItem.model_validate(json.loads(x)) for x in lines][:20]
        cat.upsert(items)
        # A reader (another process's index) that has read 5 changes and then stalled.
        slow = type(cat)(services.store, embedder=cat.embedder)
        assert [s for s, _ in slow.changes_after(0, limit=5)] == [1, 2, 3, 4, 5]
        slow.changes_after(5, limit=0)
        services.index.refresh()  # this process's index reads everything
        assert cat.trim_changes() == 5
        assert [s for s, _ in slow.changes_after(5, limit=3)] == [6, 7, 8]
        assert cat.version() == 20  # the catalog version (the log's length) is unchanged
        assert services.store.read_log(CHANGES, limit=1)[0][0] == 6
    finally:
        services.close()
