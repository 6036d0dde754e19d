"""The inbox worker: queued callbacks and messages → chat messages → NLP → profiles → replies.

Delivery from the queue is at-least-once; every effect here is once-only: the pipeline
applies a message to the profiles under a once-marker, events are counted under one, and
replies are deduplicated by message id (see replies.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from bot import aibot
from bot.callback import XmlDoc, text_field
from bot.dedup import platform_key, safe_id
from bot.inbox import KIND_AIBOT, KIND_MESSAGE, KIND_PLATFORM
from bot.replies import Replier, sent_marker
from bot.routing import (
    AIBOT_RESPONSE_URL,
    AIBOT_STREAM,
    AIBOT_WS,
    KIND_REPLY,
    WECOM_APPCHAT,
    Conversation,
    ReplyJob,
    mentions,
    route,
)
from models.messages import ChatMessage
from nlp.pipeline import MessagePipeline
from store import Batch, QueueItem, Store

log = logging.getLogger("mingpian.bot")

EVENTS_NS = "bot.events"  # counters: event name → count
UNKNOWN_NS = "bot.unknown"  # counters: unknown message type → count
REJECTED_NS = "bot.rejected"  # counters: reason → count

_MAX_TEXT = 20_000
_MAX_CREATE_TIME = 4_102_444_800  # 2100-01-01 UTC: a later CreateTime is junk, not a time
# Message types whose text we can read; anything else is "unknown:<type>" and contentless.
_KNOWN_TYPES = frozenset({"text", "image", "voice", "video", "shortvideo", "location", "link",
                          "file"})


def message_from_platform(source: str, fields: XmlDoc, *, received_at: int,
                          bot_names: Sequence[str]) -> ChatMessage:
    """Return the chat message of a decrypted (non-event) callback."""
    msg_type = text_field(fields, "MsgType").lower() or "unknown"
    if msg_type == "text":
        text = text_field(fields, "Content")
    elif msg_type == "voice":
        text = text_field(fields, "Recognition")  # speech recognition, when switched on
    elif msg_type == "link":
        text = "\n".join(t for t in (text_field(fields, "Title"),
                                     text_field(fields, "Description")) if t)
    elif msg_type == "location":
        text = text_field(fields, "Label")
    else:
        text = ""
    if msg_type not in _KNOWN_TYPES:
        msg_type = "unknown:" + msg_type[:48]
    create = text_field(fields, "CreateTime")
    ts = int(create) if create.isdigit() and int(create) <= _MAX_CREATE_TIME else received_at
    chat_id = text_field(fields, "ChatId")
    sender = text_field(fields, "FromUserName") or "unknown"
    msg_id = text_field(fields, "MsgId")
    return ChatMessage(
        msg_id=safe_id(f"{source}:{msg_id}") if msg_id else safe_id(platform_key(source, fields)),
        platform="wecom" if source == "wecom" else "wechat",
        group_id=safe_id(chat_id) if chat_id else None,
        user_id=safe_id(sender),
        text=text[:_MAX_TEXT],
        ts=ts,
        msg_type=msg_type,
        mentions_bot=mentions(text, bot_names),
    )


def event_name(fields: XmlDoc) -> str:
    """Return e.g. "subscribe" or "change_external_contact:add_external_contact"."""
    name = text_field(fields, "Event").strip() or "unknown"
    change = text_field(fields, "ChangeType").strip()
    return f"{name}:{change}" if change else name


@dataclass
class InboxHandler:
    """Handle one claimed batch of the inbox queue (services.inbox_handler)."""

    store: Store
    queue: str
    pipeline: MessagePipeline
    replier: Replier | None = None
    group_channel: str = WECOM_APPCHAT
    dedup_ttl_s: int = 7 * 86_400
    # How an AI-bot message that came over HTTP is answered (MINGPIAN_WECOM_AIBOT__REPLY_MODE);
    # one that came over the long connection is answered over it.
    aibot_reply_mode: str = "response_url"
    aibot_names: tuple[str, ...] = ("名片助手",)

    def __call__(self, items: Sequence[QueueItem]) -> None:
        messages: list[ChatMessage] = []
        convs: dict[str, Conversation | None] = {}
        replies: list[ReplyJob] = []
        for item in items:
            kind = item.payload.get("kind")
            if kind == KIND_PLATFORM:
                found = self._platform(item.payload)
            elif kind == KIND_MESSAGE:
                found = self._message(item.payload)
            elif kind == KIND_AIBOT:
                found = self._aibot(item.payload)
            elif kind == KIND_REPLY:
                try:
                    replies.append(ReplyJob.model_validate(item.payload))
                except ValidationError:
                    self._reject("invalid_reply", item.id)
                continue
            else:
                self._reject(f"kind:{str(kind)[:32]}", item.id)
                continue
            if found is not None:
                msg, conv = found
                messages.append(msg)
                convs[msg.msg_id] = conv
        if messages:
            self._process(messages, convs)
        if replies and self.replier is not None:
            for job in replies:
                self.replier.send(job)

    def _process(self, messages: list[ChatMessage],
                 convs: dict[str, Conversation | None]) -> None:
        # Redacted once, by the inbox, before they were queued.
        processed = self.pipeline.process_redacted(messages)
        if self.replier is None:
            return
        for pm in processed:
            # A redelivered message (applied=False) is considered again: the reply job is
            # deduplicated by message id and the rate limit holds, so it never answers twice.
            conv = convs.get(pm.msg.msg_id)
            job = self.replier.decide(pm.msg, conv)
            if job is not None:
                self.store.enqueue(self.queue, job.payload(), dedup_key=f"reply:{pm.msg.msg_id}",
                                   dedup_ttl_s=self.dedup_ttl_s)
            elif conv is not None and conv.channel == AIBOT_STREAM:
                self._finish_silent_stream(pm.msg.msg_id, conv.address)

    def _finish_silent_stream(self, msg_id: str, sid: str) -> None:
        # WeCom polls an open stream for up to 6 minutes: when the policy stays silent, end
        # it now with no content. The sent-marker makes this and a real answer exclusive (a
        # redelivered message is silent because its first delivery answered).
        if self.store.first_seen(sent_marker(msg_id), self.dedup_ttl_s):
            self.store.put(aibot.STREAM_NS, sid, aibot.stream_body(sid, finish=True)["stream"],
                           ttl_s=aibot.STREAM_TTL_S)

    def _platform(self, payload: dict[str, Any]) -> tuple[ChatMessage, Conversation | None] | None:
        source = str(payload.get("source", ""))
        fields: XmlDoc = payload.get("fields") or {}
        if text_field(fields, "MsgType").lower() == "event":
            name = event_name(fields)
            self.store.commit(Batch(incrs=[(EVENTS_NS, name, 1)],
                                    once=f"event:{platform_key(source, fields)}",
                                    once_ttl_s=self.dedup_ttl_s))
            return None
        names = self.replier.policy.bot_names if self.replier is not None else ()
        try:
            msg = message_from_platform(source, fields, received_at=int(payload.get("at", 0)),
                                        bot_names=names)
        except ValidationError:
            self._reject("invalid_platform_message", platform_key(source, fields))
            return None
        if msg.msg_type.startswith("unknown:"):
            # Accepted and acknowledged, recorded as unknown; still a message of its sender.
            self.store.commit(Batch(incrs=[(UNKNOWN_NS, msg.msg_type[8:], 1)],
                                    once=f"unknown:{msg.msg_id}", once_ttl_s=self.dedup_ttl_s))
        # Answered at the platform's own ids (the message carries safe_id forms of them). A
        # callback's ChatId is an app group chat: answered with appchat/send, never through a
        # group-robot webhook, which reaches only the one group its robot sits in.
        return msg, route(platform=msg.platform, group_id=text_field(fields, "ChatId"),
                          user_id=text_field(fields, "FromUserName"),
                          group_channel=WECOM_APPCHAT)

    def _aibot(self, payload: dict[str, Any]) -> tuple[ChatMessage, Conversation | None] | None:
        body = payload.get("body")
        if not isinstance(body, dict):
            self._reject("invalid_aibot", "")
            return None
        msgid = str(body.get("msgid", ""))
        if aibot.is_event(body):
            name = "aibot:" + aibot.event_type(body)
            if name == "aibot:feedback_event":
                # 1 accurate, 2 inaccurate, 3 cancelled (WECOM.md §1.4): counted as a signal.
                kind = aibot.obj(aibot.obj(body, "event"), "feedback_event").get("type")
                name += f":{kind}" if kind in (1, 2, 3) else ":unknown"
            self.store.commit(Batch(incrs=[(EVENTS_NS, name, 1)], once=f"event:aibot:{msgid}",
                                    once_ttl_s=self.dedup_ttl_s))
            return None
        at = int(payload.get("at", 0))
        msg = aibot.message_from_aibot(body, bot_names=self.aibot_names, received_at=at)
        if msg is None:
            kind = f"aibot:{str(body.get('msgtype', ''))[:40]}"
            self.store.commit(Batch(incrs=[(UNKNOWN_NS, kind, 1)], once=f"unknown:aibot:{msgid}",
                                    once_ttl_s=self.dedup_ttl_s))
            return None
        return msg, self._aibot_conversation(payload, body, msg, at)

    def _aibot_conversation(self, payload: dict[str, Any], body: dict[str, Any],
                            msg: ChatMessage, at: int) -> Conversation | None:
        """Where the answer to an AI-bot message goes: over the connection it came by."""
        thread = msg.group_id or msg.user_id
        if payload.get("channel") == "ws":
            req_id = payload.get("req_id")
            return Conversation(AIBOT_WS, str(req_id), thread=thread) if req_id else None
        if self.aibot_reply_mode == "stream":
            return Conversation(AIBOT_STREAM, aibot.stream_id(str(body.get("msgid"))),
                                thread=thread, expires_at=at + aibot.STREAM_TTL_S)
        url = body.get("response_url")
        if not isinstance(url, str) or not url:
            return None
        # Valid for an hour from the message; `at` (when we received it) is a little later.
        return Conversation(AIBOT_RESPONSE_URL, url, thread=thread,
                            expires_at=at + aibot.RESPONSE_URL_TTL_S - 60)

    def _message(self, payload: dict[str, Any]) -> tuple[ChatMessage, Conversation | None] | None:
        try:
            msg = ChatMessage.model_validate(payload.get("message"))
        except ValidationError:
            self._reject("invalid_message", "")
            return None
        return msg, route(platform=msg.platform, group_id=msg.group_id, user_id=msg.user_id,
                          group_channel=self.group_channel)

    def _reject(self, reason: str, ref: str) -> None:
        log.warning("inbox item skipped (%s) %s", reason, ref)
        self.store.incr(REJECTED_NS, reason)
