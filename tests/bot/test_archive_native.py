"""Native archive messages (WECOM.md §2.5) → chat messages, recalls, consent, skips."""

from __future__ import annotations

import json

import pytest

from bot.archive.native import archive_msg_id, map_native
from tests.bot.archive_fake.support import text


def test_point4_text_maps_to_a_contracts_message() -> None:
    m = map_native(text("宝宝湿疹用什么好", sender="wmAbc", room="wrR1", msgtime_ms=1_764_000_123_456,
                        msgid="x1", tolist=["zhangsan", "wmAbc"]))
    assert m.message is not None
    msg = m.message
    assert (msg.msg_id, msg.platform, msg.group_id, msg.user_id, msg.text, msg.ts) == \
        ("x1", "archive", "wrR1", "wmAbc", "宝宝湿疹用什么好", 1_764_000_123)
    assert (m.sender, m.peer, m.room) == ("wmAbc", "zhangsan", "wrR1")


def test_point4_mixed_link_weapp_take_their_text_parts_and_titles() -> None:
    base = text("", msgid="x2")
    mixed = {**base, "msgtype": "mixed", "mixed": {"item": [
        {"type": "text", "content": json.dumps({"content": "第一段"})},
        {"type": "image", "content": json.dumps({"sdkfileid": "f"})},
        {"type": "text", "content": {"content": "第二段"}}]}}
    got = map_native(mixed).message
    assert got is not None and got.text == "第一段\n第二段" and got.msg_type == "mixed"
    only_images = {**base, "msgtype": "mixed", "mixed": {"item": [{"type": "image",
                                                                   "content": "{}"}]}}
    assert map_native(only_images).skip == "media:mixed"
    link = {**base, "msgtype": "link", "link": {"title": "防晒攻略", "description": "d"}}
    weapp = {**base, "msgtype": "weapp", "weapp": {"title": "商城小程序", "username": "u"}}
    for doc, title in ((link, "防晒攻略"), (weapp, "商城小程序")):
        msg = map_native(doc).message
        assert msg is not None and msg.text == title


def test_point4_recall_consent_switch_media() -> None:
    recall = {"msgid": "r1", "action": "recall", "from": "wmA", "tolist": [], "roomid": "wr1",
              "msgtime": 1_764_000_000_000, "msgtype": "revoke",
              "revoke": {"pre_msgid": "CAQQ+/="}}
    assert map_native(recall).recalled == archive_msg_id("CAQQ+/=")
    agree = {"msgid": "a1", "action": "send", "from": "wmA", "msgtime": 1_764_000_000_000,
             "msgtype": "agree", "agree": {"userid": "wmA", "agree_time": 1_764_000_001_000}}
    assert map_native(agree).consent == ("wmA", True, 1_764_000_001.0)
    disagree = {**agree, "msgtype": "disagree", "disagree": agree["agree"]}
    assert map_native(disagree).consent == ("wmA", False, 1_764_000_001.0)
    assert map_native({"msgid": "s1", "action": "switch", "time": 1, "user": "u"}).skip == \
        "switch"
    image = {**text("", msgid="i1"), "msgtype": "image", "image": {"sdkfileid": "f"}}
    assert map_native(image).skip == "media:image"
    card = {**text("", msgid="c1"), "msgtype": "card", "card": {}}
    assert map_native(card).skip == "type:card"


def test_point4_bad_messages_raise() -> None:
    with pytest.raises(ValueError, match="msgid"):
        map_native({"action": "send", "msgtype": "text"})
    with pytest.raises(ValueError, match="msgtime"):
        map_native({**text("hi", msgid="b1"), "msgtime": "soon"})
