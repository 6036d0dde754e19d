"""Where a reply goes, and whether a message calls the bot: one answer for every path.

A message reaches the worker either as a decrypted callback or as a chat message from
/v1/messages or ingest; both are routed here, and a reply job (the queue item that carries a
decided reply from the inbox worker to the sender) is the one model below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

from models.messages import Platform

# Channels a reply can take; see bot/platform.py.
WECOM_USER = "wecom_user"  # message/send to one member
WECOM_APPCHAT = "wecom_appchat"  # appchat/send to an app group chat
WECOM_WEBHOOK = "wecom_webhook"  # the group robot's webhook
WECHAT_CUSTOM = "wechat_custom"  # Official Account customer-service message
# The WeCom AI bot answers the message itself (bot/aibot.py); the address is per message.
AIBOT_RESPONSE_URL = "aibot_response_url"  # one POST to the message's response_url
AIBOT_STREAM = "aibot_stream"  # the passive stream reply; the address is the stream id
AIBOT_WS = "aibot_ws"  # aibot_respond_msg over the long connection; the address is req_id
# Channels addressed to one person: the address is that person's platform id.
PERSONAL_CHANNELS = frozenset({WECOM_USER, WECHAT_CUSTOM})

KIND_REPLY: Final = "reply"  # the queue payload "kind" of a reply job


@dataclass(frozen=True)
class Conversation:
    """Where a reply to a message would go."""

    channel: str
    address: str
    # The chat the reply lands in, when the address names one message rather than a chat
    # (an AI bot's response_url or stream): the rate limit is per chat, not per message.
    thread: str | None = None
    expires_at: int = 0  # Unix seconds after which the address no longer works; 0 = never

    @property
    def key(self) -> str:
        return f"{self.channel}:{self.thread or self.address}"


def mentions(text: str, names: Sequence[str]) -> bool:
    """Return whether the text @-mentions one of the names (half- or full-width @)."""
    return any(f"@{n}" in text or f"＠{n}" in text for n in names if n)


def strip_mentions(text: str, names: Sequence[str]) -> str:
    """Return the text without its @-mentions of the names, stripped."""
    for n in names:
        if n:
            text = text.replace(f"@{n}", " ").replace(f"＠{n}", " ")
    return text.strip()


def route(*, platform: Platform, group_id: str | None, user_id: str,
          group_channel: str) -> Conversation | None:
    """Return where a reply to a message goes: its group through `group_channel`, else its
    sender in person; None when the platform has no way to answer."""
    if platform == "archive":
        # The chat archive (会话内容存档) is a record, read minutes or days later, mostly of
        # customer groups no app API can post in; an @-mention there is the AI bot's to
        # answer, live. Archived messages are learned from, never answered.
        return None
    if group_id:
        # A personal-WeChat group has no API to answer in; any other group is a WeCom one.
        return Conversation(group_channel, group_id) if platform != "wechat" else None
    if platform == "wecom":
        return Conversation(WECOM_USER, user_id)
    if platform == "wechat":
        return Conversation(WECHAT_CUSTOM, user_id)
    return None


class ReplyJob(BaseModel):
    """A decided reply, queued (deduplicated by the message id) until it is sent once."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["reply"] = KIND_REPLY
    reply_id: str  # the id of the message it answers
    channel: str
    address: str
    conversation: str = ""
    text: str
    items: tuple[str, ...] = ()
    mentioned: bool = False
    user_id: str | None = None  # the asker (erasure drops the job)
    ts: int = 0  # when the asker wrote (an erasure after it drops the job)
    expires_at: int = 0  # Unix seconds after which the address no longer works; 0 = never

    def payload(self) -> dict[str, object]:
        """Return the queue payload of this job (the one place it is serialised)."""
        return self.model_dump(mode="json")

    def concerns(self, user_id: str) -> bool:
        """Return whether the job holds data of this user."""
        return self.user_id == user_id or (self.channel in PERSONAL_CHANNELS
                                           and self.address == user_id)
