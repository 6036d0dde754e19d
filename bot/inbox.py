"""The front door of the bot: durably queue what arrives, deduplicated, and nothing else.

Everything here runs on the callback's hot path, before WeChat's 5-second timer runs out:
the dedup key and the queue item are written atomically, and concurrent callbacks share one
store write (store/groupcommit.py). Parsing into chat messages, tagging and replies happen
in the worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import ValidationError

from bot.callback import XmlDoc, text_field
from bot.dedup import message_key, platform_key, safe_id
from bot.routing import KIND_REPLY, ReplyJob
from models.errors import BadRequestError
from models.messages import ChatMessage
from nlp.privacy import redact, redact_message
from store import Store
from store.base import JSON
from store.groupcommit import GroupCommit

Source = Literal["wecom", "wechat"]

# Queue payload kinds (field "kind"); the worker dispatches on it.
KIND_PLATFORM = "platform"  # a decrypted callback: {"source", "fields", "at"}
KIND_MESSAGE = "message"  # a ChatMessage from /v1/messages or ingest: {"message"}
KIND_AIBOT = "aibot"  # a decrypted WeCom AI-bot callback: {"channel", "req_id", "body", "at"}
# KIND_REPLY (bot/routing.py): a ReplyJob, queued by the worker.

# Fields of a callback that carry what a person typed: redacted before they are queued.
TEXT_FIELDS = ("Content", "Recognition", "Title", "Description", "Label")
# Fields of a callback that name a person: the sender, and in contact events the external
# contact and the member (erasure looks for the user in each).
PERSON_FIELDS = ("FromUserName", "ExternalUserID", "UserID")
# Keys of an AI-bot body (at any depth) that carry what a person typed: text.content,
# voice.content (speech recognition), mixed/quote items, feedback comments (WECOM.md §1.3).
AIBOT_TEXT_KEYS = frozenset({"content"})
_AIBOT_MAX_DEPTH = 16


def redact_aibot(value: Any, depth: int = 0) -> Any:
    """Return a copy of an AI-bot JSON body with every typed text redacted."""
    if depth > _AIBOT_MAX_DEPTH:
        return None  # the callback parser caps nesting far below this
    if isinstance(value, dict):
        return {k: redact(v) if k in AIBOT_TEXT_KEYS and isinstance(v, str)
                else redact_aibot(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_aibot(v, depth + 1) for v in value]
    return value


def aibot_sender(body: Mapping[str, Any]) -> str:
    """Return an AI-bot body's from.userid, or "" when it has none."""
    sender = body.get("from")
    userid = sender.get("userid") if isinstance(sender, Mapping) else None
    return userid if isinstance(userid, str) else ""


def aibot_key(msgid: str) -> str:
    """Return the dedup key of an AI-bot callback (msgid is unique per callback, and WeCom
    may deliver one twice: WECOM.md §1.3)."""
    return f"aibot:{msgid}"


def _names(platform_ids: Sequence[str], user_id: str) -> bool:
    # The worker turns a sender into a user id with safe_id: match either form.
    return any(v and user_id in (v, safe_id(v)) for v in platform_ids)


def concerns_user(payload: JSON, user_id: str) -> bool:
    """Return whether a queue item (any kind) holds data of this user."""
    kind = payload.get("kind")
    if kind == KIND_MESSAGE:
        msg = payload.get("message")
        return isinstance(msg, dict) and msg.get("user_id") == user_id
    if kind == KIND_PLATFORM:
        fields = payload.get("fields")
        people = [text_field(fields, f) for f in PERSON_FIELDS] if isinstance(fields, dict) \
            else []
        return _names(people, user_id)
    if kind == KIND_AIBOT:
        body = payload.get("body")
        return _names([aibot_sender(body)] if isinstance(body, dict) else [], user_id)
    if kind == KIND_REPLY:
        try:
            return ReplyJob.model_validate(payload).concerns(user_id)
        except ValidationError:
            return False  # the worker rejects it without sending; it holds nothing usable
    return False


def erase_queued(store: Store, queue: str, user_id: str) -> int:
    """Delete the user's waiting, claimed and dead-lettered items; return how many went."""
    return store.delete_queued(queue, match=lambda p: concerns_user(p, user_id))


class Inbox:
    """Queue incoming callbacks and messages once each."""

    def __init__(self, store: Store, *, queue: str, dedup_ttl_s: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.queue = queue
        self.dedup_ttl_s = dedup_ttl_s
        self.clock = clock
        self._group: GroupCommit[tuple[JSON, str | None], bool] = GroupCommit(self._write)

    def _platform_item(self, source: Source, fields: XmlDoc) -> tuple[JSON, str]:
        key = platform_key(source, fields)
        # Phone, ID-card and bank-card numbers never reach the store, not even the queue.
        safe = {k: redact(v) if k in TEXT_FIELDS and isinstance(v, str) else v
                for k, v in fields.items()}
        return {"kind": KIND_PLATFORM, "source": source, "fields": safe,
                "at": int(self.clock())}, key

    async def accept_platform(self, source: Source, fields: XmlDoc) -> bool:
        """Queue a decrypted callback; return False for a repeat of one already queued.
        Returns once the callback is durably queued, its write shared with every callback
        that arrived meanwhile."""
        return await self._group.submit(self._platform_item(source, fields))

    async def accept_aibot(self, body: Mapping[str, Any], *, channel: Literal["http", "ws"],
                           req_id: str | None = None) -> bool:
        """Queue a decrypted AI-bot callback (HTTP or long connection); return False for a
        repeat of one already queued. Returns once it is durably queued, its write shared
        with every callback that arrived meanwhile. The body must carry a msgid."""
        msgid = body.get("msgid")
        if not isinstance(msgid, str) or not msgid:
            raise BadRequestError("an AI-bot callback without msgid cannot be deduplicated")
        payload: JSON = {"kind": KIND_AIBOT, "channel": channel, "req_id": req_id,
                         "body": redact_aibot(dict(body)), "at": int(self.clock())}
        return await self._group.submit((payload, aibot_key(msgid)))

    def _write(self, items: Sequence[tuple[JSON, str | None]]) -> list[bool]:
        return self.store.enqueue_many(self.queue, items, dedup_ttl_s=self.dedup_ttl_s)

    def close(self) -> None:
        """Finish the shared write in flight."""
        self._group.close()

    def erase_user(self, user_id: str) -> int:
        """Delete every queued and dead-lettered item of the user; return how many went."""
        return erase_queued(self.store, self.queue, user_id)

    def accept_message(self, msg: ChatMessage) -> bool:
        """Queue a chat message; return False when its msg_id was already queued."""
        doc = redact_message(msg).model_dump(mode="json")
        payload = {"kind": KIND_MESSAGE, "message": doc}
        return self.store.enqueue(self.queue, payload, dedup_key=message_key(msg.msg_id),
                                  dedup_ttl_s=self.dedup_ttl_s)
