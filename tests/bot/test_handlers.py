"""The inbox worker: every message type and event, recorded once, profiles by sender."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.services import INBOX
from bot.callback import parse_xml
from bot.dedup import safe_id
from bot.handlers import EVENTS_NS, UNKNOWN_NS, message_from_platform
from bot.inbox import KIND_PLATFORM
from tests.bot.support import (
    bot_app,
    bot_settings,
    drain,
    event_xml,
    message_xml,
    wechat_config,
    wechat_post,
    wecom_post,
)

PLAINS = [
    message_xml("text", content="宝宝六个月了，辅食先加什么好？"),
    message_xml("image", extra={"PicUrl": "http://x/y.jpg", "MediaId": "m1"}),
    message_xml("voice", extra={"MediaId": "m2", "Format": "amr", "Recognition": "宝宝湿疹怎么办"}),
    message_xml("link", extra={"Title": "辅食攻略", "Description": "六个月宝宝", "Url": "http://x"}),
    message_xml("miniprogram_notice"),
    event_xml("subscribe"),
    event_xml("click", extra={"EventKey": "MENU_1"}),
    event_xml("enter_agent", extra={"EventKey": ""}),
    event_xml("change_external_contact", extra={
        "ChangeType": "add_external_contact", "UserID": "zhangsan", "ExternalUserID": "wmEXT",
        "State": "card-1", "WelcomeCode": "W"}),
    # Same second, same sender, another external contact: a different event.
    event_xml("change_external_contact", extra={
        "ChangeType": "add_external_contact", "UserID": "zhangsan", "ExternalUserID": "wmEXT2",
        "State": "card-1", "WelcomeCode": "W2"}),
    event_xml("change_external_chat", extra={
        "ChangeType": "update", "ChatId": "wrCHAT", "UpdateDetail": "add_member",
        "JoinScene": "1", "MemChangeCnt": "1"}),
]


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_every_type_reaches_the_worker_once(backend: str, tmp_path: Path,
                                            request: pytest.FixtureRequest) -> None:
    redis_url = request.getfixturevalue("clean_redis_url") if backend == "redis" else None
    settings = bot_settings(tmp_path / "data", redis_url=redis_url)
    with bot_app(settings) as (client, services):
        for _ in range(2):  # every callback delivered twice
            for plain in PLAINS:
                q, b = wecom_post(plain)
                assert client.post("/wecom/callback", params=q, content=b).status_code == 200
        assert services.store.queue_depth(INBOX) == len(PLAINS)
        # And a redelivery inside the queue (a worker died after processing, before its ack).
        for plain in PLAINS:
            services.store.enqueue(INBOX, {"kind": KIND_PLATFORM, "source": "wecom",
                                           "fields": parse_xml(plain.encode()), "at": 0})
        drain(services)
        profile = services.profiles.get("user", "zhangsan")
        # text, image, voice, link and the unknown type are messages of zhangsan's.
        assert profile is not None and profile.message_count == 5
        assert services.store.counters(EVENTS_NS) == {
            "subscribe": 1, "click": 1, "enter_agent": 1,
            "change_external_contact:add_external_contact": 2,
            "change_external_chat:update": 1}
        assert services.store.counters(UNKNOWN_NS) == {"miniprogram_notice": 1}
        assert services.store.dead_letters(INBOX) == []


def test_official_account_messages_are_profiled_by_openid(tmp_path: Path) -> None:
    # Plaintext mode (with a key): both an encrypted and a plaintext message are taken.
    with bot_app(bot_settings(tmp_path / "data", wechat=wechat_config("plaintext"))
                 ) as (client, services):
        openid = "oyORnuP8q7ou2gfYjqLzSIWZf0rs"
        q, b = wechat_post(message_xml(content="有适合敏感肌的面霜吗", sender=openid,
                                       to="gh_10f6c3c3ac5a"))
        assert client.post("/wechat/callback", params=q, content=b).text == "success"
        q, b = wechat_post(message_xml(content="好的", sender=openid, to="gh_10f6c3c3ac5a"),
                           encrypted=False)
        assert client.post("/wechat/callback", params=q, content=b).text == "success"
        drain(services)
        profile = services.profiles.get("user", openid)
        assert profile is not None and profile.message_count == 2


def test_phone_numbers_never_reach_the_queue(tmp_path: Path) -> None:
    with bot_app(bot_settings(tmp_path / "data")) as (client, services):
        q, b = wecom_post(message_xml(content="加我微信，电话13812345678"))
        client.post("/wecom/callback", params=q, content=b)
        item = services.store.claim(INBOX, consumer="peek", max_items=1, visibility_s=0)[0]
        assert "13812345678" not in str(item.payload)
        assert "[手机号]" in item.payload["fields"]["Content"]


def test_message_from_platform() -> None:
    voice = parse_xml(message_xml("voice", msg_id="5", extra={"Recognition": "宝宝发烧"}).encode())
    msg = message_from_platform("wecom", voice, received_at=1, bot_names=["名片助手"])
    assert (msg.msg_id, msg.msg_type, msg.text, msg.platform) == ("wecom:5", "voice",
                                                                  "宝宝发烧", "wecom")
    link = parse_xml(message_xml("link", extra={"Title": "标题", "Description": "描述"}).encode())
    assert message_from_platform("wecom", link, received_at=1, bot_names=[]).text == "标题\n描述"
    text = parse_xml(message_xml(content="@名片助手 推荐奶粉", sender="li@corp").encode())
    msg = message_from_platform("wechat", text, received_at=1, bot_names=["名片助手"])
    assert msg.mentions_bot and msg.platform == "wechat"
    assert msg.user_id == safe_id("li@corp") and msg.user_id.startswith("h:")
    odd = parse_xml(message_xml("shake").encode())
    assert message_from_platform("wecom", odd, received_at=1, bot_names=[]).msg_type == \
        "unknown:shake"
