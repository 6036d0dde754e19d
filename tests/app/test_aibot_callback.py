"""Issue 14 points 1 and 2: the WeCom AI bot's HTTP callback, end to end.

A signed, encrypted JSON callback (built with an independent implementation of Tencent's
scheme, tests/bot/aibot_support.py) goes into the app; the real worker (the inbox handler)
profiles it and answers through the chosen route: once to the response_url on the local
WeCom stand-in, or as the passive stream reply read back through WeCom's refresh callbacks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import MingpianApp
from app.services import INBOX, Services
from bot.aibot import WS_REPLY_QUEUE, stream_id
from bot.dedup import safe_id
from bot.handlers import EVENTS_NS
from bot.replies import REPLY_LOG
from tests.bot.aibot_support import (
    TOKEN,
    aibot_message,
    aibot_settings,
    open_answer,
    signed_post,
    tx_encrypt,
    tx_sign,
)
from tests.bot.fake_wecom import FakeWeCom
from tests.bot.support import bot_app, bot_settings, drain, load_demo_catalog

CARD = "http://127.0.0.1:8000/s/AbC12xyz"  # a share link: items go through /r/AbC12xyz/…
NOON = 1764216000  # 2025-11-27 12:00 Beijing
LATE = 1764255600  # 2025-11-27 23:00 Beijing: quiet hours
PATH = "/wecom/aibot/callback"
QUESTION = "@名片助手 宝宝湿疹用什么好"


def _app(tmp_path: Path, request: pytest.FixtureRequest, backend: str, mode: str
         ) -> Iterator[tuple[TestClient, Services]]:
    redis_url = request.getfixturevalue("clean_redis_url") if backend == "redis" else None
    settings = bot_settings(tmp_path / "data", redis_url=redis_url,
                            wecom_aibot=aibot_settings(reply_mode=mode),
                            reply={"card_url": CARD})
    with bot_app(settings) as (client, services):
        load_demo_catalog(services)
        services.bot.replier.clock = lambda: NOON
        yield client, services


@pytest.fixture
def url_bot(backend: str, tmp_path: Path, request: pytest.FixtureRequest
            ) -> Iterator[tuple[TestClient, Services]]:
    yield from _app(tmp_path, request, backend, "response_url")


@pytest.fixture
def stream_bot(backend: str, tmp_path: Path, request: pytest.FixtureRequest
               ) -> Iterator[tuple[TestClient, Services]]:
    yield from _app(tmp_path, request, backend, "stream")


def _post(client: TestClient, doc: dict[str, Any], nonce: str = "8831") -> Any:
    q, body = signed_post(doc, nonce=nonce)
    return client.post(PATH, params=q, content=body,
                       headers={"content-type": "application/json"})


def _refresh(client: TestClient, sid: str, nonce: str) -> dict[str, Any]:
    """WeCom's stream refresh callback; return the decrypted stream reply."""
    doc = {"msgid": f"refresh-{nonce}", "aibotid": "AIBOTID", "chatid": "wrCHAT01",
           "chattype": "group", "from": {"userid": "zhangsan"}, "msgtype": "stream",
           "stream": {"id": sid}}
    r = _post(client, doc, nonce=nonce)
    assert r.status_code == 200, r.text
    return open_answer(r.json(), nonce=nonce)


def _profile_count(services: Services, user: str = "zhangsan") -> int:
    profile = services.profiles.get("user", safe_id(user))
    return 0 if profile is None else profile.message_count


# -- done when: three deliveries, one profile message, one reply -----------------------------
def test_point1_done_when_response_url(url_bot: tuple[TestClient, Services],
                                       fake: FakeWeCom) -> None:
    client, services = url_bot
    doc = aibot_message("CAIQ16HMjQYY/NGagIOAgAMgq4KM0AI=", text=QUESTION,
                        response_url=fake.response_url())
    for _ in range(3):
        r = _post(client, doc)
        assert r.status_code == 200 and r.content == b""
    assert services.store.queue_depth(INBOX) == 1
    drain(services)
    # A fourth delivery after the worker ran: still nothing new.
    assert _post(client, doc).status_code == 200
    drain(services)
    assert _profile_count(services) == 1
    group = services.profiles.get("group", "wrCHAT01")
    assert group is not None and group.message_count == 1
    replies = fake.aibot_responses()
    assert len(replies) == 1
    content = replies[0]["markdown"]["content"]
    assert replies[0]["msgtype"] == "markdown"
    assert "http://127.0.0.1:8000/r/AbC12xyz/" in content and "¥" in content
    assert CARD in content
    # Only the one POST reached the response_url (it is usable once).
    assert len(fake.sent("/cgi-bin/aibot/response")) == 1


def test_point2_done_when_stream(stream_bot: tuple[TestClient, Services]) -> None:
    client, services = stream_bot
    msgid = "CAIQ16HMjQYY/NGagIOAgAMgq4KM0AI="
    doc = aibot_message(msgid, text=QUESTION, response_url="https://unused.example/r")
    sid = stream_id(msgid)
    for n in range(3):
        r = _post(client, doc, nonce=f"90{n}")
        assert r.status_code == 200
        opened = open_answer(r.json(), nonce=f"90{n}")
        # Every delivery opens (or re-opens) the same stream, empty until the worker answers.
        assert opened == {"msgtype": "stream",
                          "stream": {"id": sid, "finish": False, "content": ""}}
    assert _refresh(client, sid, "1001")["stream"]["finish"] is False
    drain(services)
    answer = _refresh(client, sid, "1002")["stream"]
    assert answer["id"] == sid and answer["finish"] is True
    assert "http://127.0.0.1:8000/r/AbC12xyz/" in answer["content"] and "¥" in answer["content"]
    # Every later refresh gets the same full text; nothing of it was queued or profiled.
    assert _refresh(client, sid, "1003")["stream"] == answer
    assert services.store.queue_depth(INBOX) == 0
    assert _profile_count(services) == 1
    assert len(services.store.read_log(REPLY_LOG)) == 1


# -- the policy decides ------------------------------------------------------------------------
def test_point2_stream_finishes_empty_when_the_policy_is_silent(
        stream_bot: tuple[TestClient, Services]) -> None:
    client, services = stream_bot
    services.bot.replier.clock = lambda: LATE  # quiet hours
    r = _post(client, aibot_message("m-late", text=QUESTION), nonce="77")
    assert open_answer(r.json(), nonce="77")["stream"]["finish"] is False
    drain(services)
    assert _refresh(client, stream_id("m-late"), "78")["stream"] == {
        "id": stream_id("m-late"), "finish": True, "content": ""}
    assert services.store.read_log(REPLY_LOG) == []


def test_point2_an_expired_response_url_is_not_used(url_bot: tuple[TestClient, Services],
                                                    fake: FakeWeCom) -> None:
    client, services = url_bot
    _post(client, aibot_message("m-old", text=QUESTION, response_url=fake.response_url()))
    services.bot.replier.clock = lambda: 4_000_000_000.0  # long after the hour it was valid
    drain(services)
    assert fake.sent("/cgi-bin/aibot/response") == []
    assert _profile_count(services) == 1  # profiled all the same


def test_point2_one_reply_per_group_per_interval(url_bot: tuple[TestClient, Services],
                                                 fake: FakeWeCom) -> None:
    client, services = url_bot
    for n, user in enumerate(("zhangsan", "lisi")):
        _post(client, aibot_message(f"m-rate-{n}", text=QUESTION, userid=user,
                                    response_url=fake.response_url()))
    # A single chat is its own conversation.
    _post(client, aibot_message("m-single", text="@名片助手 米粉推荐哪个", chatid=None,
                                userid="lisi", response_url=fake.response_url()))
    drain(services)
    assert len(fake.aibot_responses()) == 2
    assert _profile_count(services, "lisi") == 2


def test_point2_long_connection_messages_are_answered_over_it(
        url_bot: tuple[TestClient, Services]) -> None:
    _, services = url_bot
    inbox = services.bot.inbox
    doc = aibot_message("m-ws", text=QUESTION)
    assert asyncio.run(inbox.accept_aibot(doc, channel="ws", req_id="req-42"))
    drain(services)
    items = services.store.claim(WS_REPLY_QUEUE, consumer="t", max_items=5, visibility_s=30)
    assert len(items) == 1
    payload = items[0].payload
    assert payload["req_id"] == "req-42"
    stream = payload["body"]["stream"]
    assert payload["body"]["msgtype"] == "stream" and stream["finish"] is True
    assert "/r/AbC12xyz/" in stream["content"]


# -- events ---------------------------------------------------------------------------------------
def test_point1_events_are_accepted_once_and_answered_empty(
        stream_bot: tuple[TestClient, Services]) -> None:
    client, services = stream_bot
    base = {"aibotid": "AIBOTID", "chattype": "single", "from": {"userid": "zhangsan"},
            "create_time": 1764202312, "msgtype": "event"}
    events = [
        {**base, "msgid": "e1", "event": {"eventtype": "enter_chat"}},
        {**base, "msgid": "e2", "event": {"eventtype": "feedback_event", "feedback_event": {
            "id": "FB1", "type": 2, "content": "不准", "inaccurate_reason_list": [1]}}},
        {**base, "msgid": "e3", "response_url": "https://x/r", "event": {
            "eventtype": "template_card_event", "template_card_event": {
                "card_type": "button_interaction", "event_key": "k", "task_id": "t"}}},
    ]
    for _ in range(2):
        for ev in events:
            r = _post(client, ev)
            assert r.status_code == 200 and r.content == b""  # feedback: only empty allowed
    drain(services)
    assert services.store.counters(EVENTS_NS) == {
        "aibot:enter_chat": 1, "aibot:feedback_event:2": 1, "aibot:template_card_event": 1}
    assert _profile_count(services) == 0


# -- refusals: clear 4xx, nothing stored ----------------------------------------------------------
def test_point1_url_check(url_bot: tuple[TestClient, Services]) -> None:
    client, _ = url_bot
    echostr = tx_encrypt("6180246722045112345")
    q = {"msg_signature": tx_sign(TOKEN, "1409659589", "263014780", echostr),
         "timestamp": "1409659589", "nonce": "263014780", "echostr": echostr}
    r = client.get(PATH, params=q)
    assert r.status_code == 200 and r.text == "6180246722045112345"
    assert client.get(PATH, params={**q, "nonce": "1"}).status_code == 403


def test_point1_hostile_callbacks_are_refused(url_bot: tuple[TestClient, Services]) -> None:
    client, services = url_bot
    q, body = signed_post(aibot_message("m-h", text=QUESTION))
    bad_sig = {**q, "msg_signature": "0" * 40}
    deep = b'{"encrypt": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    wide = b'{"encrypt": "x", "pad": [' + b",".join([b"0"] * 5000) + b"]}"
    cases = [
        (bad_sig, body, 403),
        (q, b"not json", 400),
        (q, b'{"encrypt": "a", "encrypt": "b"}', 400),
        (q, deep, 400),
        (q, wide, 400),
        (q, b'{"encrypt": "' + b"A" * 70_000 + b'"}', 413),
        (q, b"<xml><Encrypt><![CDATA[x]]></Encrypt></xml>", 400),
    ]
    for query, data, status in cases:
        r = client.post(PATH, params=query, content=data)
        assert r.status_code == status, (status, r.text)
        assert r.json()["error"]["code"] in ("forbidden", "bad_request", "payload_too_large")
    # A signed body whose plaintext is not a message (no msgid).
    q2, body2 = signed_post({"msgtype": "text", "text": {"content": "x"}})
    assert client.post(PATH, params=q2, content=body2).status_code == 400
    assert services.store.queue_depth(INBOX) == 0
    assert client.get("/healthz").status_code == 200


def test_not_configured_is_404(tmp_path: Path) -> None:
    with bot_app(bot_settings(tmp_path / "data")) as (client, services):
        q, body = signed_post(aibot_message("m-n"))
        r = client.post(PATH, params=q, content=body)
        assert r.status_code == 404 and "MINGPIAN_WECOM_AIBOT" in r.json()["error"]["message"]
        assert services.store.queue_depth(INBOX) == 0


def test_openapi_documents_the_callback(url_bot: tuple[TestClient, Services]) -> None:
    client, _ = url_bot
    assert isinstance(client.app, MingpianApp)
    schema = client.app.openapi()
    assert {"get", "post"} <= set(schema["paths"][PATH])
    assert json.dumps(schema["paths"][PATH]["post"]).count("application/json") >= 1
