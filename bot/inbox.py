"""The front door of the bot: durably queue what arrives, deduplicated, and nothing else.

Everything here runs on the callback's hot path, before WeChat's 5-second timer runs out:
the dedup key and the queue item are written atomically, and concurrent callbacks share one
store write (store/groupcommit.py). Parsing into chat messages, tagging and replies happen
in the worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import ValidationError

from bot.callback import XmlDoc, text_field
from bot.dedup import message_key, platform_key, safe_id
from bot.routing import KIND_REPLY, ReplyJob
from models.messages import ChatMessage
from nlp.privacy import redact, redact_message
from store import Store
from store.base import JSON
from store.groupcommit import GroupCommit

Source = Literal["wecom", "wechat"]

# Queue payload kinds (field "kind"); the worker dispatches on it.
KIND_PLATFORM = "platform"  # a decrypted callback: {"source", "fields", "at"}
KIND_MESSAGE = "message"  # a ChatMessage from /v1/messages or ingest: {"message"}
# KIND_REPLY (bot/routing.py): a ReplyJob, queued by the worker.

# Fields of a callback that carry what a person typed: redacted before they are queued.
TEXT_FIELDS = ("Content", "Recognition", "Title", "Description", "Label")
# Fields of a callback that name a person: the sender, and in contact events the external
# contact and the member (erasure looks for the user in each).
PERSON_FIELDS = ("FromUserName", "ExternalUserID", "UserID")


def concerns_user(payload: JSON, user_id: str) -> bool:
    """Return whether a queue item (any kind) holds data of this user."""
    kind = payload.get("kind")
    if kind == KIND_MESSAGE:
        msg = payload.get("message")
        return isinstance(msg, dict) and msg.get("user_id") == user_id
    if kind == KIND_PLATFORM:
        fields = payload.get("fields")
        if not isinstance(fields, dict):
            return False
        # The worker turns a sender into a user id with safe_id: match either form.
        return any(v and user_id in (v, safe_id(v))
                   for v in (text_field(fields, f) for f in PERSON_FIELDS))
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
