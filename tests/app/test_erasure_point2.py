"""Issue 12 point 2: `DELETE /v1/users/{id}` holds. Nothing queued, claimed or
dead-lettered before it brings the member back, and the reply state and log forget them;
messages sent after it start a fresh profile (CONTRACTS §8). Both back-ends, through the
real app, inbox, worker handler and a local WeCom stand-in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.services import INBOX, Services
from bot.replies import RATE_NS, REPLY_LOG
from tests.bot.fake_wecom import FakeWeCom
from tests.bot.support import (
    bot_app,
    bot_settings,
    drain,
    load_demo_catalog,
    message_xml,
    wecom_app_config,
    wecom_post,
)
from tests.conftest import API_KEY
from tests.nlp.support import dump_store

KEY = {"X-API-Key": API_KEY}
NOON = 1764216000  # 2025-11-27 12:00 Beijing: no quiet hours


@pytest.fixture
def app(backend: str, fake: FakeWeCom, tmp_path: Path, request: pytest.FixtureRequest
        ) -> Iterator[tuple[TestClient, Services]]:
    """The service with its embedded worker stopped (items wait in the queue until a test
    drains them), WeCom replies going to the stand-in, the demo catalog indexed."""
    redis_url = request.getfixturevalue("clean_redis_url") if backend == "redis" else None
    settings = bot_settings(
        tmp_path / "data", redis_url=redis_url,
        wecom=wecom_app_config(fake))
    with bot_app(settings) as (client, services):
        load_demo_catalog(services)
        services.bot.replier.clock = lambda: NOON
        yield client, services


def _say(client: TestClient, msg_id: str, text: str, **over: Any) -> None:
    msg = {"msg_id": msg_id, "platform": "wecom", "group_id": "g-muying-01",
           "user_id": "mem-7x", "user_name": "小雨妈妈", "text": text,
           "ts": int(time.time()) - 60}
    msg.update(over)
    r = client.post("/v1/messages", json=msg, headers=KEY)
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text


def _profile(client: TestClient, user_id: str = "mem-7x") -> dict[str, Any] | None:
    r = client.get(f"/v1/users/{user_id}/profile", headers=KEY)
    assert r.status_code in (200, 404), r.text
    return r.json() if r.status_code == 200 else None


def test_point2_queued_message_does_not_resurrect_erased_user(
        app: tuple[TestClient, Services]) -> None:
    client, services = app
    _say(client, "a1", "宝宝六个月了，辅食先加什么好？")
    _say(client, "a2", "娃晚上老醒")
    drain(services)
    assert (_profile(client) or {}).get("message_count") == 2
    # Queued while no worker runs: through /v1/messages and through the WeCom callback.
    _say(client, "a3", "米粉哪个牌子好")
    q, body = wecom_post(message_xml(content="纸尿裤有推荐吗", sender="mem-7x",
                                     create_time=int(time.time()) - 30))
    assert client.post("/wecom/callback", params=q, content=body).status_code == 200
    _say(client, "b1", "我家也是", user_id="mem-8y", user_name="Lily")
    # One more is claimed by a worker (another process) that applies it only after the
    # erasure: the tombstone stops it.
    _say(client, "a4", "湿疹怎么办")
    in_flight = services.store.claim(INBOX, consumer="slow-worker", max_items=10,
                                     visibility_s=300)
    assert len(in_flight) == 4
    r = client.delete("/v1/users/mem-7x", headers=KEY)
    assert r.status_code == 200 and {"nlp", "queue"} <= set(r.json()["erased"])
    services.inbox_handler(in_flight)
    services.store.ack(INBOX, [i.id for i in in_flight])
    drain(services)
    assert _profile(client) is None
    assert (_profile(client, "mem-8y") or {}).get("message_count") == 1


def test_point2_dead_letters_and_reply_log_purged(app: tuple[TestClient, Services],
                                                  fake: FakeWeCom) -> None:
    client, services = app
    # A reply in the group, and one in a one-to-one chat with the member (WeCom app).
    _say(client, "r1", "@名片助手 宝宝六个月了，米粉推荐哪个？", ts=NOON)
    q, body = wecom_post(message_xml(content="@名片助手 有没有推荐的婴儿湿疹霜",
                                     sender="mem-7x", create_time=NOON))
    assert client.post("/wecom/callback", params=q, content=body).status_code == 200
    drain(services)
    assert len(fake.sent("/cgi-bin/appchat/send")) == 1
    assert len(fake.sent("/cgi-bin/message/send")) == 1
    assert len(services.store.read_log(REPLY_LOG)) == 2
    assert services.store.count(RATE_NS) == 2
    # A message of the member that keeps failing ends as a dead letter.
    _say(client, "poison", "这条处理失败了", ts=NOON)
    items = services.store.claim(INBOX, consumer="w", max_items=10, visibility_s=30)
    assert services.store.fail(INBOX, items[0], error="boom", max_attempts=1)
    assert len(services.store.dead_letters(INBOX)) == 1
    assert "mem-7x" in dump_store(services.store)

    assert client.delete("/v1/users/mem-7x", headers=KEY).status_code == 200

    assert services.store.dead_letters(INBOX) == []
    log = [e for _, e in services.store.read_log(REPLY_LOG)]
    assert len(log) == 2 and all(e.get("erased") for e in log)  # counted, not attributable
    # Both rate records named the member; the group's rate limit itself (a dedup key) holds.
    assert services.store.count(RATE_NS) == 0
    held = dump_store(services.store)
    leaks = [ln for ln in held.splitlines() if "mem-7x" in ln or "小雨妈妈" in ln]
    assert leaks == []


def test_point2_message_after_erasure_builds_fresh_profile(
        app: tuple[TestClient, Services]) -> None:
    client, services = app
    for n in range(3):
        _say(client, f"a{n}", "宝宝六个月了，辅食先加什么好？")
    drain(services)
    assert (_profile(client) or {}).get("message_count") == 3
    assert client.delete("/v1/users/mem-7x", headers=KEY).status_code == 200
    # A replay older than the dedup window reaches the queue again: still dropped.
    services.store.enqueue(INBOX, {"kind": "message", "message": {
        "msg_id": "a0", "platform": "wecom", "group_id": "g-muying-01", "user_id": "mem-7x",
        "text": "宝宝六个月了，辅食先加什么好？", "ts": int(time.time()) - 60}})
    # An archive import of an older message, never seen before: sent before the erasure.
    _say(client, "archived", "奶粉怎么冲", ts=int(time.time()) - 3600)
    _say(client, "late", "车子该保养了", ts=int(time.time()) + 5)  # sent after the erasure
    drain(services)
    fresh = _profile(client)
    assert fresh is not None and fresh.get("message_count") == 1
