"""Dedup keys: one per distinct platform message or event, stable across retries.

WeChat and WeCom retry a callback three times within ~15 s and may replay it hours later,
so the key must be derived from the message itself, never from the delivery.
"""

from __future__ import annotations

import hashlib
import json
import re

from bot.callback import XmlDoc, text_field
from models.ids import ID_PATTERN

_ID = re.compile(ID_PATTERN)

# Fields that identify an event. Events have no MsgId, and FromUserName + CreateTime alone
# collide: two different events in the same second are real (WxJava #1745, #3311). The key
# covers every field of the decrypted payload; these are listed so that a reader sees the
# ones that matter, and so that they are present (as "") even when absent.
EVENT_FIELDS = (
    "ToUserName", "FromUserName", "CreateTime", "MsgType", "Event", "ChangeType", "EventKey",
    "AgentID", "UserID", "ExternalUserID", "ChatId", "State", "WelcomeCode", "UpdateDetail",
    "JoinScene", "QuitScene", "MemChangeCnt", "FailReason", "Source", "Ticket",
)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def platform_key(source: str, doc: XmlDoc) -> str:
    """Return the dedup key of a decrypted callback: MsgId, else a hash of the event."""
    msg_id = text_field(doc, "MsgId")
    if msg_id:
        # MsgId is unique per receiving account; the account is part of the key so that
        # two apps or corps behind one service never shadow each other.
        return f"{source}:m:{_digest(text_field(doc, 'ToUserName'), text_field(doc, 'AgentID'), msg_id)[:40]}"
    return f"{source}:e:{event_digest(doc)}"


def event_digest(doc: XmlDoc) -> str:
    """Return a SHA-256 over every field of an event (identifying fields always included)."""
    canon: dict[str, object] = {name: "" for name in EVENT_FIELDS}
    canon.update(doc)
    return hashlib.sha256(
        json.dumps(canon, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def safe_id(value: str) -> str:
    """Return value when it is a valid opaque id, else a stable id derived from it (how a
    platform sender such as an openid becomes a user_id)."""
    if _ID.match(value):
        return value
    return "h:" + hashlib.sha1(value.encode()).hexdigest()


def message_key(msg_id: str) -> str:
    """Return the dedup key of a message from /v1/messages or `mingpian ingest`."""
    return f"m:{msg_id}"
