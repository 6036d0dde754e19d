"""A chat message from any source (CONTRACTS §2)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models.ids import Id

Platform = Literal["wecom", "wechat", "archive", "other"]


class ChatMessage(BaseModel):
    """One chat message as the queue and the NLP worker see it."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    msg_id: Id
    platform: Platform = "other"
    group_id: Id | None = None
    user_id: Id
    user_name: str | None = Field(default=None, max_length=128)
    text: str = Field(default="", max_length=20_000)
    ts: int = Field(ge=0, le=4_102_444_800)
    # Set by the bot for platform messages: "text", "image", "event:subscribe", "unknown:foo" …
    msg_type: str = Field(default="text", max_length=64)
    # True when the message @-mentions our bot (WeCom AI bot messages always do).
    mentions_bot: bool = False
    # True for messages sent by a bot (ours or another): never answered.
    from_bot: bool = False
