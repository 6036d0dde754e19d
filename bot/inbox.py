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

from bot.callback import XmlDoc
from bot.dedup import message_key, platform_key
from models.messages import ChatMessage
from nlp.privacy import redact
from store import Store
from store.base import JSON
from store.groupcommit import GroupCommit

Source = Literal["wecom", "wechat"]

# Queue payload kinds (field "kind"); the worker dispatches on it.
KIND_PLATFORM = "platform"  # a decrypted callback: {"source", "fields", "at"}
KIND_MESSAGE = "message"  # a ChatMessage from /v1/messages or ingest: {"message"}
KIND_REPLY = "reply"  # a reply to send: see bot/replies.py

# Fields of a callback that carry what a person typed: redacted before they are queued.
TEXT_FIELDS = ("Content", "Recognition", "Title", "Description", "Label")


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

    def accept_message(self, msg: ChatMessage) -> bool:
        """Queue a chat message; return False when its msg_id was already queued."""
        doc = msg.model_dump(mode="json")
        doc["text"] = redact(msg.text)
        payload = {"kind": KIND_MESSAGE, "message": doc}
        return self.store.enqueue(self.queue, payload, dedup_key=message_key(msg.msg_id),
                                  dedup_ttl_s=self.dedup_ttl_s)
