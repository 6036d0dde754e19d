"""The WeCom AI bot (issue 14 point 1): crypto against an independent implementation of
Tencent's scheme, the hardened JSON parser, messages from its JSON, the inbox's dedup and
redaction, and the markdown answer."""

from __future__ import annotations

import asyncio
import json

import pytest

from bot.aibot import (
    AibotCallback,
    item_link,
    message_from_aibot,
    parse_json,
    render_markdown,
    stream_body,
    stream_id,
    strip_leading_mention,
)
from bot.dedup import safe_id
from bot.inbox import KIND_AIBOT, Inbox, concerns_user
from models.errors import BadRequestError, ForbiddenError
from nlp.recommend import Recommendation
from store import Store
from tests.bot.aibot_support import (
    AES_KEY,
    GROUP_TEXT,
    TOKEN,
    signed_post,
    tx_decrypt,
    tx_encrypt,
    tx_sign,
)


@pytest.fixture
def cb() -> AibotCallback:
    return AibotCallback(token=TOKEN, aes_key=AES_KEY, clock=lambda: 1764202400)


# -- crypto ----------------------------------------------------------------------------------
def test_point1_url_check_decrypts_echostr_with_empty_receive_id(cb: AibotCallback) -> None:
    echostr = tx_encrypt("1616140317555161061")
    sig = tx_sign(TOKEN, "1409659589", "263014780", echostr)
    assert cb.verify_url(msg_signature=sig, timestamp="1409659589", nonce="263014780",
                         echostr=echostr) == "1616140317555161061"
    with pytest.raises(ForbiddenError):
        cb.verify_url(msg_signature="0" * 40, timestamp="1409659589", nonce="263014780",
                      echostr=echostr)


def test_point1_open_verifies_and_decrypts_the_json_body(cb: AibotCallback) -> None:
    q, body = signed_post(GROUP_TEXT)
    assert cb.open(body, **q) == GROUP_TEXT
    # The signature covers encrypt, timestamp and nonce: any change is a 403.
    with pytest.raises(ForbiddenError):
        cb.open(body, msg_signature=q["msg_signature"], timestamp="1764202313",
                nonce=q["nonce"])
    # Signed but encrypted for another receiver (a corp id): not for this bot.
    q2, body2 = signed_post(GROUP_TEXT, receive_id="wwcorp")
    with pytest.raises(BadRequestError):
        cb.open(body2, **q2)


def test_point1_body_must_be_an_encrypt_envelope(cb: AibotCallback) -> None:
    for bad in (b"", b"<xml><Encrypt>x</Encrypt></xml>", b'{"encrypt": 5}', b"[1]",
                b'{"encrypt": "a", "encrypt": "b"}', b"\xff\xfe{}"):
        with pytest.raises(BadRequestError):
            cb.open(bad, msg_signature="x", timestamp="1", nonce="2")


def test_point2_passive_reply_is_the_four_field_encrypted_json(cb: AibotCallback) -> None:
    plain = stream_body("sid-1", content="**你好**", finish=True)
    out = cb.encrypt(plain, nonce="8831")
    assert set(out) == {"encrypt", "msgsignature", "timestamp", "nonce"}
    assert out["nonce"] == "8831" and out["timestamp"] == 1764202400
    assert out["msgsignature"] == tx_sign(TOKEN, "1764202400", "8831", out["encrypt"])
    msg, receive_id = tx_decrypt(out["encrypt"])
    assert receive_id == "" and json.loads(msg) == plain


# -- the JSON parser ---------------------------------------------------------------------------
@pytest.mark.parametrize("data", [
    b'{"a": 1, "a": 2}',  # duplicate key
    b'{"a": {"b": 1, "b": 1}}',  # duplicate key below the top
    b'{"a": NaN}', b'{"a": Infinity}',
    b'{"a": ' + b"[" * 12 + b"]" * 12 + b"}",  # deeper than 12
    b"[" * 100_000 + b"]" * 100_000,  # deep enough to stop Python's own parser
    b'{"a": [' + b",".join([b"1"] * 300) + b"]}",  # more values than the cap
    b'"just a string"', b"{", b"\xc3\x28",
])
def test_point1_hostile_json_is_refused(data: bytes) -> None:
    with pytest.raises(BadRequestError):
        parse_json(data, max_values=256)


def test_parse_json_takes_a_real_event() -> None:
    event = {"msgid": "m", "create_time": 1700000000, "aibotid": "b", "chattype": "single",
             "from": {"userid": "u"}, "msgtype": "event",
             "event": {"eventtype": "template_card_event", "template_card_event": {
                 "card_type": "vote_interaction", "event_key": "k", "task_id": "t",
                 "selected_items": {"selected_item": [
                     {"question_key": "q", "option_ids": {"option_id": ["1", "2"]}}]}}}}
    assert parse_json(json.dumps(event).encode()) == event


# -- messages -----------------------------------------------------------------------------------
def test_point1_group_mention_is_stripped_and_counts_as_a_mention() -> None:
    msg = message_from_aibot(GROUP_TEXT, bot_names=["名片助手"], received_at=1764202400)
    assert msg is not None
    assert msg.text == "宝宝湿疹用什么好" and msg.mentions_bot
    assert msg.user_id == "zhangsan" and msg.group_id == "wrCHAT01"
    assert msg.msg_id == safe_id(f"aibot:{GROUP_TEXT['msgid']}") and msg.platform == "wecom"
    assert msg.ts == 1764202400  # no create_time on a message: when it was received


def test_leading_mention_forms() -> None:
    assert strip_leading_mention("＠名片助手 你好", ["名片助手"]) == ("你好", True)
    assert strip_leading_mention("@名片 助手 你好", ["名片 助手"]) == ("你好", True)
    # The display name differs from the configured one: the leading @word is the bot's.
    assert strip_leading_mention("@RobotA hello robot", ["名片助手"]) == ("hello robot", True)
    assert strip_leading_mention("宝宝湿疹 @名片助手", ["名片助手"]) == ("宝宝湿疹 @名片助手", False)


def test_single_chat_mixed_voice_and_what_is_not_a_message() -> None:
    base = {"msgid": "m1", "aibotid": "b", "chattype": "single", "from": {"userid": "lisi"}}
    mixed = {**base, "msgtype": "mixed", "mixed": {"msg_item": [
        {"msgtype": "text", "text": {"content": "这个面霜"}},
        {"msgtype": "image", "image": {"url": "https://x"}},
        {"msgtype": "text", "text": {"content": "适合敏感肌吗"}}]}}
    msg = message_from_aibot(mixed, bot_names=[], received_at=5)
    assert msg is not None and msg.text == "这个面霜\n适合敏感肌吗"
    assert msg.group_id is None and msg.mentions_bot  # a single chat talks to the bot
    voice = message_from_aibot({**base, "msgtype": "voice", "voice": {"content": "米粉"}},
                               bot_names=[], received_at=5)
    assert voice is not None and voice.text == "米粉"
    image = message_from_aibot({**base, "msgtype": "image", "image": {"url": "u"}},
                               bot_names=[], received_at=5)
    assert image is not None and image.text == "" and image.msg_type == "image"
    quote = {**base, "msgtype": "text", "text": {"content": "要这个"},
             "quote": {"msgtype": "text", "text": {"content": "别人的话"}}}
    quoted = message_from_aibot(quote, bot_names=[], received_at=5)
    assert quoted is not None and quoted.text == "要这个"
    for other in ({**base, "msgtype": "event", "event": {"eventtype": "enter_chat"}},
                  {**base, "msgtype": "stream", "stream": {"id": "s"}},
                  {**base, "msgtype": "location"},
                  {**base, "msgtype": "text", "text": {"content": "x"}, "from": {}}):
        assert message_from_aibot(other, bot_names=[], received_at=5) is None


# -- the inbox ---------------------------------------------------------------------------------
def test_point1_inbox_dedups_on_msgid_and_redacts(store: Store) -> None:
    inbox = Inbox(store, queue="inbox", dedup_ttl_s=7 * 86_400, clock=lambda: 1764202400)
    doc = {**GROUP_TEXT, "text": {"content": "@名片助手 电话13812345678 宝宝湿疹"},
           "response_url": "https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=13812345678123"}

    async def deliver() -> list[bool]:
        return [await inbox.accept_aibot(doc, channel="http") for _ in range(3)]

    try:
        assert asyncio.run(deliver()) == [True, False, False]
    finally:
        inbox.close()
    assert store.queue_depth("inbox") == 1
    item = store.claim("inbox", consumer="t", max_items=5, visibility_s=30)[0]
    p = item.payload
    assert p["kind"] == KIND_AIBOT and p["channel"] == "http" and p["req_id"] is None
    assert p["at"] == 1764202400
    assert "13812345678" not in p["body"]["text"]["content"]
    assert p["body"]["response_url"] == doc["response_url"]  # addresses are not redacted
    assert concerns_user(p, "zhangsan") and concerns_user(p, safe_id("zhangsan"))
    assert not concerns_user(p, "lisi")


def test_inbox_refuses_a_body_without_msgid(store: Store) -> None:
    inbox = Inbox(store, queue="inbox", dedup_ttl_s=60)
    try:
        with pytest.raises(BadRequestError):
            asyncio.run(inbox.accept_aibot({"msgtype": "text"}, channel="ws", req_id="r"))
    finally:
        inbox.close()
    assert store.queue_depth("inbox") == 0


# -- answers -----------------------------------------------------------------------------------
def _item(item_id: str = "sku-1", title: str = "米粉 [6月+]") -> Recommendation:
    return Recommendation(item_id, "product", title, 0.9, 6900, "https://mall/p/sku-1", "r")


def test_point2_markdown_links_items_through_the_share_code() -> None:
    text = render_markdown([_item()], "https://card.example.com/s/AbC_12", None)
    assert "[米粉 \\[6月+\\]](https://card.example.com/r/AbC_12/sku-1) ¥69.00" in text
    assert "(https://card.example.com/s/AbC_12)" in text
    # Not a share link (a bare card page, or none): the item's own URL.
    assert item_link(_item(), card_url="https://card.example.com/c/card-7") == \
        "https://mall/p/sku-1"
    assert item_link(_item(), card_url=None) == "https://mall/p/sku-1"
    assert item_link(_item("a/b"), card_url="http://h/s/X") == "http://h/r/X/a%2Fb"


def test_stream_ids_are_stable_per_message_and_content_is_capped() -> None:
    assert stream_id("m1") == stream_id("m1") != stream_id("m2")
    body = stream_body("s", content="湿" * 10_000)
    assert len(body["stream"]["content"].encode()) <= 20_480
