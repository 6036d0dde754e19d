"""The same MsgId delivered three times — in a row, concurrently, a day later after a
restart — changes the profile once. Both back-ends."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

from app.services import INBOX
from app.settings import Settings
from bot.callback import parse_xml
from bot.dedup import platform_key
from store.sqlite import SQLiteStore
from tests.bot.support import bot_app, bot_settings, drain, message_xml, wecom_post

DAY = 86_400


def _settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    redis_url = request.getfixturevalue("clean_redis_url") if backend == "redis" else None
    return bot_settings(tmp_path / "data", redis_url=redis_url)


def test_three_deliveries_in_a_row(backend: str, tmp_path: Path,
                                   request: pytest.FixtureRequest) -> None:
    settings = _settings(backend, tmp_path, request)
    plain = message_xml(content="宝宝湿疹反反复复怎么办", sender="u-2001", msg_id="900001")
    with bot_app(settings) as (client, services):
        for _ in range(3):
            q, b = wecom_post(plain)  # each retry is signed afresh, like WeChat's
            assert client.post("/wecom/callback", params=q, content=b).status_code == 200
            drain(services)
        profile = services.profiles.get("user", "u-2001")
        assert profile is not None and profile.message_count == 1


def test_three_deliveries_at_once(backend: str, tmp_path: Path,
                                  request: pytest.FixtureRequest) -> None:
    settings = _settings(backend, tmp_path, request)
    plain = message_xml(content="有没有推荐的婴儿湿疹霜", sender="u-2002", msg_id="900002")
    posts = [wecom_post(plain) for _ in range(3)]
    with bot_app(settings) as (client, services):
        barrier = threading.Barrier(len(posts))
        statuses: list[int] = []

        def deliver(q: dict[str, str], b: bytes) -> None:
            barrier.wait()
            statuses.append(client.post("/wecom/callback", params=q, content=b).status_code)

        threads = [threading.Thread(target=deliver, args=p) for p in posts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert statuses == [200, 200, 200]
        assert services.store.queue_depth(INBOX) == 1
        drain(services)
        profile = services.profiles.get("user", "u-2002")
        assert profile is not None and profile.message_count == 1


def test_a_day_later_after_a_restart_sqlite(tmp_path: Path) -> None:
    settings = bot_settings(tmp_path / "data")
    plain = message_xml(content="六个月宝宝辅食吃什么", sender="u-2003", msg_id="900003")
    with bot_app(settings) as (client, services):
        q, b = wecom_post(plain)
        assert client.post("/wecom/callback", params=q, content=b).status_code == 200
        drain(services)
    # A new process on the same data directory, one day later.
    later = SQLiteStore(settings.data_dir / "mingpian.db", clock=lambda: time.time() + DAY)
    with bot_app(settings, store=later) as (client, services):
        q, b = wecom_post(plain)
        assert client.post("/wecom/callback", params=q, content=b).status_code == 200
        assert services.store.queue_depth(INBOX) == 0  # recognised: nothing queued
        drain(services)
        profile = services.profiles.get("user", "u-2003")
        assert profile is not None and profile.message_count == 1
    later.close()


def test_past_the_dedup_window_the_profile_still_counts_once(tmp_path: Path) -> None:
    # Eight days later the 7-day dedup key is gone and the message is queued again; the
    # profile's own once-marker (kept 30 days) still stops a second count.
    settings = bot_settings(tmp_path / "data")
    plain = message_xml(content="推荐个安全座椅", sender="u-2004", msg_id="900004")
    with bot_app(settings) as (client, services):
        q, b = wecom_post(plain)
        client.post("/wecom/callback", params=q, content=b)
        drain(services)
    later = SQLiteStore(settings.data_dir / "mingpian.db", clock=lambda: time.time() + 8 * DAY)
    with bot_app(settings, store=later) as (client, services):
        q, b = wecom_post(plain)
        assert client.post("/wecom/callback", params=q, content=b).status_code == 200
        assert services.store.queue_depth(INBOX) == 1
        drain(services)
        profile = services.profiles.get("user", "u-2004")
        assert profile is not None and profile.message_count == 1
    later.close()


def test_a_day_later_after_a_restart_redis(tmp_path: Path, clean_redis_url: str) -> None:
    settings = bot_settings(tmp_path / "data", redis_url=clean_redis_url)
    plain = message_xml(content="宝宝便秘怎么办", sender="u-2005", msg_id="900005")
    with bot_app(settings) as (client, services):
        q, b = wecom_post(plain)
        assert client.post("/wecom/callback", params=q, content=b).status_code == 200
        drain(services)
    # The key outlives a day by far: Redis expires it, durably, only after 7 days.
    key = platform_key("wecom", parse_xml(plain.encode()))
    r = redis.Redis.from_url(clean_redis_url)
    ttl = int(r.ttl(f"mp:{{q:{INBOX}}}:d:{key}"))
    r.close()
    assert ttl > 7 * DAY - 120
    with bot_app(settings) as (client, services):  # a new process, same Redis
        q, b = wecom_post(plain)
        assert client.post("/wecom/callback", params=q, content=b).status_code == 200
        assert services.store.queue_depth(INBOX) == 0
        drain(services)
        profile = services.profiles.get("user", "u-2005")
        assert profile is not None and profile.message_count == 1
