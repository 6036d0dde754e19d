"""One routing rule and one mention check for callbacks and chat messages alike; reply jobs
are one typed model, serialised in one place."""

from __future__ import annotations

from bot.callback import parse_xml
from bot.handlers import message_from_platform
from bot.inbox import concerns_user
from bot.routing import (
    WECHAT_CUSTOM,
    WECOM_APPCHAT,
    WECOM_USER,
    WECOM_WEBHOOK,
    Conversation,
    ReplyJob,
    mentions,
    route,
    strip_mentions,
)
from tests.bot.support import message_xml


def test_a_full_width_mention_in_a_callback_calls_the_bot() -> None:
    # The callback path used to look for a half-width "@" only; the reply decision for
    # both. Now a callback's mentions_bot says what the replier decides.
    fields = parse_xml(message_xml(content="＠名片助手 推荐个米粉").encode())
    msg = message_from_platform("wecom", fields, received_at=1, bot_names=["名片助手"])
    assert msg.mentions_bot
    assert mentions("＠名片助手 在吗", ["名片助手"]) and not mentions("名片助手", ["名片助手"])
    assert strip_mentions("@名片助手 米粉＠名片助手", ["名片助手"]) == "米粉"


def test_a_group_goes_through_the_configured_group_channel() -> None:
    # A callback from a WeCom group chat used to go to appchat/send whatever the group
    # channel; a /v1/messages group message to the configured one. Both take the latter.
    for channel in (WECOM_APPCHAT, WECOM_WEBHOOK):
        assert route(platform="wecom", group_id="wrCHAT", user_id="lisi",
                     group_channel=channel) == Conversation(channel, "wrCHAT")
        assert route(platform="other", group_id="g1", user_id="u1",
                     group_channel=channel) == Conversation(channel, "g1")


def test_archived_messages_are_never_answered() -> None:
    # The archive is read late and mostly holds customer groups no app can post in.
    for group in ("wrCHAT", None):
        assert route(platform="archive", group_id=group, user_id="u1",
                     group_channel=WECOM_WEBHOOK) is None


def test_people_are_answered_in_person_and_wechat_groups_not_at_all() -> None:
    kw = {"group_channel": WECOM_APPCHAT}
    assert route(platform="wecom", group_id=None, user_id="lisi", **kw) == \
        Conversation(WECOM_USER, "lisi")
    assert route(platform="wechat", group_id=None, user_id="o-1", **kw) == \
        Conversation(WECHAT_CUSTOM, "o-1")
    assert route(platform="wechat", group_id="g", user_id="o-1", **kw) is None
    assert route(platform="other", group_id=None, user_id="u", **kw) is None


def test_a_reply_job_round_trips_through_its_payload() -> None:
    job = ReplyJob(reply_id="r1", channel=WECOM_USER, address="lisi",
                   conversation="wecom_user:lisi", text="为你推荐：", items=("a", "b"),
                   mentioned=True, user_id="lisi", ts=5)
    payload = job.payload()
    assert payload["kind"] == "reply" and payload["items"] == ["a", "b"]
    assert ReplyJob.model_validate(payload) == job
    assert concerns_user(payload, "lisi") and not concerns_user(payload, "zhangsan")
    # A job queued before user_id and ts were added still reads.
    old = ReplyJob.model_validate({"kind": "reply", "reply_id": "r2", "channel": WECOM_USER,
                                   "address": "lisi", "text": "x", "items": []})
    assert (old.user_id, old.ts) == (None, 0) and concerns_user(old.payload(), "lisi")
