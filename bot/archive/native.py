"""A decrypted chat-archive message (WECOM.md §2.5) → what mingpian does with it.

Pure: no store, no network. The same mapping serves `mingpian archive pull` (the SDK) and
`mingpian ingest --format wecom-archive` (exports of decrypted JSON lines by other tools).

- ``send`` text → its text; ``mixed`` → its text parts; ``link`` / ``weapp`` → their titles.
- ``recall`` (``msgtype`` revoke, ``revoke.pre_msgid``) → the recalled message is dropped.
- ``agree`` / ``disagree`` → the consent of the external contact named in it.
- ``switch`` (a member switched devices/enterprises; no msgtype) and media (image, voice,
  video, emotion, file…, which need GetMediaData) are skipped and counted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.dedup import safe_id
from models.ids import ID_PATTERN
from models.messages import ChatMessage

_ID = re.compile(ID_PATTERN)
_MAX_TEXT = 20_000
_MAX_TS = 4_102_444_800
_MS_ABOVE = 1e11  # a time above this is in milliseconds (1e11 s is year 5138)
# Message types whose content is fetched with GetMediaData (WXJ-T `mediaType`, WECOM.md §2.5).
MEDIA_TYPES = frozenset({"image", "voice", "video", "emotion", "file", "meeting_voice_call",
                         "voip_doc_share"})
# External contacts' ids: wo… / wm… (external_userid); bots' wb… (HDR message.go says bot
# messages carry an external_userid; the wb prefix is what public samples show: UNCONFIRMED).
EXTERNAL_PREFIXES = ("wo", "wm")
BOT_PREFIXES = ("wb",)


def archive_msg_id(msgid: str) -> str:
    """Return the mingpian msg_id of an archive msgid: itself when it is a valid id, else a
    stable id derived from it (archive msgids are base64 and may hold '/', '+', '=')."""
    return msgid if _ID.match(msgid) else safe_id(f"archive:{msgid}")


def is_external(user: str) -> bool:
    """Return whether a sender id is an external contact's (external_userid)."""
    return user.startswith(EXTERNAL_PREFIXES)


@dataclass(frozen=True)
class Mapped:
    """What one native message comes to: exactly one of message, recalled, consent, skip."""

    message: ChatMessage | None = None
    sender: str = ""  # the native `from` (external_userid or member userid)
    peer: str = ""  # a member on the other side (from tolist), for check_single_agree
    room: str = ""  # the native roomid ("" for a one-to-one chat)
    recalled: str | None = None  # the msg_id of the recalled message
    consent: tuple[str, bool, float] | None = None  # (external_userid, agree, at seconds)
    skip: str | None = None  # why it was not used: "switch", "media:image", "type:card", …


def _str(doc: Mapping[str, Any], key: str) -> str:
    v = doc.get(key)
    return v if isinstance(v, str) else ""


def _obj(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    v = doc.get(key)
    return v if isinstance(v, Mapping) else {}


def _seconds(ms: object) -> float | None:
    if isinstance(ms, bool) or not isinstance(ms, int | float | str):
        return None
    try:
        v = float(ms)
    except ValueError:
        return None
    # msgtime and agree_time are milliseconds (HDR message.go); tolerate seconds.
    return v / 1000 if v > _MS_ABOVE else v


def _mixed_text(mixed: Mapping[str, Any]) -> str:
    parts: list[str] = []
    items = mixed.get("item")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping) or item.get("type") != "text":
            continue
        content = item.get("content")
        if isinstance(content, str):
            # The item's content is itself a JSON string ({"content": "…"}) in archive output.
            try:
                content = json.loads(content)
            except json.JSONDecodeError:
                parts.append(content)
                continue
        if isinstance(content, Mapping) and isinstance(content.get("content"), str):
            parts.append(content["content"])
    return "\n".join(p for p in parts if p)


def _text(msgtype: str, doc: Mapping[str, Any]) -> str | None:
    if msgtype == "text":
        return _str(_obj(doc, "text"), "content")
    if msgtype == "mixed":
        return _mixed_text(_obj(doc, "mixed")) or None
    if msgtype in ("link", "weapp"):
        return _str(_obj(doc, msgtype), "title") or None
    return None


def _recall(doc: Mapping[str, Any], *, sender: str, room: str) -> Mapped:
    pre = _str(_obj(doc, "revoke"), "pre_msgid")
    if not pre:
        return Mapped(skip="revoke:no_pre_msgid")
    return Mapped(recalled=archive_msg_id(pre), sender=sender, room=room)


def _consent(doc: Mapping[str, Any], msgtype: str, *, sender: str, room: str) -> Mapped:
    body = _obj(doc, msgtype)
    who = _str(body, "userid") or sender
    at = _seconds(body.get("agree_time")) or _seconds(doc.get("msgtime")) or 0.0
    if not who:
        return Mapped(skip=f"{msgtype}:no_userid")
    return Mapped(consent=(who, msgtype == "agree", at), sender=sender, room=room)


def map_native(doc: Mapping[str, Any]) -> Mapped:
    """Return what a decrypted archive message means (ValueError when it is not one)."""
    msgid = _str(doc, "msgid")
    if not msgid:
        raise ValueError("no msgid")
    action = _str(doc, "action") or "send"
    msgtype = _str(doc, "msgtype")
    sender = _str(doc, "from")
    room = _str(doc, "roomid")
    if action == "switch":
        return Mapped(skip="switch")
    if action == "recall" or msgtype == "revoke":
        return _recall(doc, sender=sender, room=room)
    if msgtype in ("agree", "disagree"):
        return _consent(doc, msgtype, sender=sender, room=room)
    if msgtype in MEDIA_TYPES:
        return Mapped(skip=f"media:{msgtype}")
    text = _text(msgtype, doc)
    if text is None:
        what = "media:mixed" if msgtype == "mixed" else f"type:{msgtype[:40] or 'none'}"
        return Mapped(skip=what)
    ts = _seconds(doc.get("msgtime"))
    if not sender or ts is None or not 0 <= ts <= _MAX_TS:
        raise ValueError("no sender or no valid msgtime")
    tolist = doc.get("tolist")
    peers = [t for t in tolist if isinstance(t, str)] if isinstance(tolist, list) else []
    peer = next((t for t in peers if not is_external(t) and t != sender), "")
    msg = ChatMessage(
        msg_id=archive_msg_id(msgid), platform="archive",
        group_id=safe_id(room) if room else None, user_id=safe_id(sender),
        text=text[:_MAX_TEXT], ts=int(ts), msg_type=msgtype,
        from_bot=sender.startswith(BOT_PREFIXES))
    return Mapped(message=msg, sender=sender, peer=peer, room=room)
