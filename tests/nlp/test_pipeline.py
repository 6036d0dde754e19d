"""The pipeline: redaction before storage, raw text dropped unless retained, exactly once,
erasure of everything nlp holds about a user."""

from __future__ import annotations

import pytest

from models.messages import ChatMessage
from nlp.pipeline import NS_MESSAGES, MessagePipeline
from nlp.profile import ProfileRepo
from nlp.tagging import Tagger
from store.base import Store
from tests.nlp.support import dump_store

T0 = 1_764_000_000
PHONE, ID_NO, CARD = "13912345678", "11010519491231002X", "6222020200112233446"

CHAT = [
    ("m1", "u-mom", "宝宝六个月了，辅食先加什么好？加我微信13912345678细聊"),
    ("m2", "u-mom", "娃晚上老醒，一晚上起来三四次"),
    ("m3", "u-mom", "好的谢谢"),
    ("m4", "u-dad", f"我的身份证{ID_NO}，银行卡{CARD}，帮我看看保险"),
    ("m5", "u-dad", "[捂脸]"),
]
# Fragments of the raw text that appear in no tag name or keyword.
RAW = ["辅食先加什么好", "加我微信", "一晚上起来三四次", "帮我看看保险", PHONE, ID_NO, CARD]


def messages(group: str | None = "g-muying") -> list[ChatMessage]:
    return [ChatMessage(msg_id=i, user_id=u, group_id=group, text=t, ts=T0 + n,
                        platform="wecom") for n, (i, u, t) in enumerate(CHAT)]


def pipeline(store: Store, tagger: Tagger, *, retain: bool) -> MessagePipeline:
    return MessagePipeline(store=store, tagger=tagger, retain_messages=retain,
                           profiles=ProfileRepo(store, half_life_days=30))


def test_raw_text_is_not_kept(store: Store, tagger: Tagger) -> None:
    pipe = pipeline(store, tagger, retain=False)
    out = pipe.process(messages())
    assert [p.applied for p in out] == [True] * 5
    assert PHONE not in out[0].msg.text and "[手机号]" in out[0].msg.text
    assert out[3].msg.text == "我的身份证[身份证号]，银行卡[银行卡号]，帮我看看保险"
    assert [h.tag for h in out[1].result.tags][:1] == ["睡眠"]
    assert out[2].result.contentless and out[4].result.contentless
    held = dump_store(store)
    assert held and not [f for f in RAW if f in held]
    assert store.count(NS_MESSAGES) == 0 and pipe.list_messages("u-mom") == []
    mom = pipe.profiles.get("user", "u-mom")
    assert mom is not None and mom.message_count == 3
    assert {"辅食添加", "睡眠"} <= {t.tag for t in mom.tags}
    group = pipe.profiles.get("group", "g-muying")
    assert group is not None and group.message_count == 5


def test_retained_messages_are_redacted_and_erasable(store: Store, tagger: Tagger) -> None:
    pipe = pipeline(store, tagger, retain=True)
    pipe.process(messages())
    kept = pipe.list_messages("u-dad")
    assert [m["msg_id"] for m in kept] == ["m4", "m5"]
    assert kept[0]["text"] == "我的身份证[身份证号]，银行卡[银行卡号]，帮我看看保险"
    held = dump_store(store)
    assert "帮我看看保险" in held  # retained, as asked …
    assert not [n for n in (PHONE, ID_NO, CARD) if n in held]  # … but redacted
    assert pipe.erase_user("u-dad") == 3  # two messages and the profile
    assert pipe.list_messages("u-dad") == [] and pipe.profiles.get("user", "u-dad") is None
    held = dump_store(store)
    assert "u-dad" not in held and "帮我看看保险" not in held
    assert len(pipe.list_messages("u-mom")) == 3


def test_each_message_applies_once(store: Store, tagger: Tagger) -> None:
    pipe = pipeline(store, tagger, retain=True)
    pipe.process(messages())
    again = pipe.process(messages())
    assert [p.applied for p in again] == [False] * 5
    mom = pipe.profiles.get("user", "u-mom")
    assert mom is not None and mom.message_count == 3
    # An erased user's replayed message brings back neither profile nor text.
    pipe.erase_user("u-mom")
    pipe.process(messages())
    assert pipe.profiles.get("user", "u-mom") is None and pipe.list_messages("u-mom") == []


def test_events_and_bot_messages_are_not_profiled(store: Store, tagger: Tagger) -> None:
    pipe = pipeline(store, tagger, retain=False)
    out = pipe.process([
        ChatMessage(msg_id="e1", user_id="u1", text="", ts=T0, msg_type="event:subscribe"),
        ChatMessage(msg_id="b1", user_id="bot", group_id="g1", text="推荐：有机米粉", ts=T0,
                    from_bot=True),
        ChatMessage(msg_id="t1", user_id="u1", group_id=None, text="轮胎扎了个钉子", ts=T0),
    ])
    assert [p.applied for p in out] == [False, False, True]
    assert pipe.profiles.get("user", "bot") is None and pipe.profiles.get("group", "g1") is None
    u1 = pipe.profiles.get("user", "u1")
    assert u1 is not None and u1.message_count == 1 and u1.tags[0].tag == "轮胎"


@pytest.mark.parametrize("retain", [False, True])
def test_one_to_one_chats_have_no_group(store: Store, tagger: Tagger, retain: bool) -> None:
    pipe = pipeline(store, tagger, retain=retain)
    pipe.process(messages(group=None))
    mom = pipe.profiles.get("user", "u-mom")
    assert mom is not None and mom.groups == [] and store.count("profile.group") == 0
