"""The front door of the bot: durably queue what arrives, deduplicated, and nothing else.

Everything here runs on the callback's hot path, before WeChat's 5-second timer runs out:
one store transaction per message (dedup key and queue item written atomically). Parsing
into chat messages, tagging and replies happen in the worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Literal

from bot.callback import XmlDoc
from bot.dedup import message_key, platform_key
from models.messages import ChatMessage
from nlp.privacy import redact
from store import Store

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
        # SQLite: writers of one process take turns here instead of in SQLite's busy
        # handler, which sleeps whole milliseconds between retries.
        self._serial: AbstractContextManager[object] = (
            threading.Lock() if store.backend == "sqlite" else nullcontext())

    def accept_platform(self, source: Source, fields: XmlDoc) -> bool:
        """Queue a decrypted callback; return False for a repeat of one already queued."""
        key = platform_key(source, fields)
        # Phone, ID-card and bank-card numbers never reach the store, not even the queue.
        safe = {k: redact(v) if k in TEXT_FIELDS and isinstance(v, str) else v
                for k, v in fields.items()}
        payload = {"kind": KIND_PLATFORM, "source": source, "fields": safe,
                   "at": int(self.clock())}
        with self._serial:
            return self.store.enqueue(self.queue, payload, dedup_key=key,
                                      dedup_ttl_s=self.dedup_ttl_s)

    def accept_message(self, msg: ChatMessage) -> bool:
        """Queue a chat message; return False when its msg_id was already queued."""
        doc = msg.model_dump(mode="json")
        doc["text"] = redact(msg.text)
        payload = {"kind": KIND_MESSAGE, "message": doc}
        with self._serial:
            return self.store.enqueue(self.queue, payload, dedup_key=message_key(msg.msg_id),
                                      dedup_ttl_s=self.dedup_ttl_s)
