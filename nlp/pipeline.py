"""The message pipeline: redact → tag (one embedder call per batch) → update the user's and
the group's profiles exactly once → keep the redacted text only if retention is on.

Messages are redacted once, at the earliest point: the bot's inbox redacts what it queues
(bot/inbox.py), and its worker hands them on with `process_redacted`; a caller holding raw
text uses `process`, which redacts first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models.messages import ChatMessage
from nlp.privacy import redact_message
from nlp.profile import ProfileRepo
from nlp.tagging import Tagger, TagResult
from store.base import JSON, Batch, Store

NS_MESSAGES = "messages.user"  # key "<user_id>/<msg_id>": "/" never occurs in an id
_NOT_TAGGED = TagResult(tags=[], vector=None, contentless=True)


@dataclass
class ProcessedMessage:
    """One message after the pipeline: its redacted form, its tags, and whether the profiles
    took it now (False for a repeat, an event or a bot's own message)."""

    msg: ChatMessage
    result: TagResult
    applied: bool


def _profiled(msg: ChatMessage) -> bool:
    # Platform events (subscribe, click…) are not things a person said, and a bot's messages
    # say nothing about the bot's interests.
    return not msg.from_bot and not msg.msg_type.startswith("event")


class MessagePipeline:
    """Turns chat messages into profile updates; raw text never reaches the store."""

    def __init__(self, *, store: Store, tagger: Tagger, profiles: ProfileRepo,
                 retain_messages: bool) -> None:
        self.store = store
        self.tagger = tagger
        self.profiles = profiles
        self.retain_messages = retain_messages

    def process(self, messages: Sequence[ChatMessage]) -> list[ProcessedMessage]:
        """Redact, tag and apply each message to its user's and group's profiles."""
        return self.process_redacted([redact_message(m) for m in messages])

    def process_redacted(self, safe: Sequence[ChatMessage]) -> list[ProcessedMessage]:
        """Tag and apply each already-redacted message (see `redact_message`) to its user's
        and group's profiles."""
        wanted = [m for m in safe if _profiled(m)]
        results = self.tagger.tag_batch([m.text for m in wanted])
        # The whole batch in one read and one commit of the profiles it touches.
        applied = self.profiles.apply_many(list(zip(wanted, results, strict=True)))
        taken = iter(zip(results, applied, strict=True))
        out: list[ProcessedMessage] = []
        for m in safe:
            result, fresh = next(taken) if _profiled(m) else (_NOT_TAGGED, False)
            out.append(ProcessedMessage(msg=m, result=result, applied=fresh))
        if self.retain_messages:
            # Only when applied now: a replay of a message of an erased user must not bring
            # its text back.
            kept = [(NS_MESSAGES, message_key(p.msg.user_id, p.msg.msg_id), _retained(p))
                    for p in out if p.applied]
            if kept:
                self.store.commit(Batch(puts=kept))
                self._drop_erased([p.msg for p in out if p.applied])
        return out

    def _drop_erased(self, msgs: Sequence[ChatMessage]) -> None:
        # An erasure that committed its tombstone after these messages were applied may
        # have scanned the retained texts before the commit above: look again, afterwards.
        erased = self.profiles.erased_since(list({m.user_id for m in msgs}))
        gone = [(NS_MESSAGES, message_key(m.user_id, m.msg_id)) for m in msgs
                if m.ts <= erased.get(m.user_id, float("-inf"))]
        if gone:
            self.store.commit(Batch(deletes=gone))

    def list_messages(self, user_id: str) -> list[dict[str, object]]:
        """Return the retained (redacted) messages of a user, oldest first."""
        docs = [rec.doc for _, rec in self.store.scan(NS_MESSAGES, prefix=f"{user_id}/")]
        return sorted(docs, key=lambda d: (int(d.get("ts", 0)), str(d.get("msg_id"))))

    def erase_user(self, user_id: str) -> int:
        """Delete the user's profile and retained messages, leaving a tombstone; return how
        many records went."""
        existed = self.profiles.get("user", user_id) is not None
        # Tombstone first: from its commit on, no worker applies (or retains) a message of
        # the user sent before it, so the scan below cannot miss one written meanwhile.
        self.profiles.erase_user(user_id)
        keys = [k for k, _ in self.store.scan(NS_MESSAGES, prefix=f"{user_id}/")]
        n = sum(1 for k in keys if self.store.delete(NS_MESSAGES, k))
        return n + int(existed)


def _retained(p: ProcessedMessage) -> JSON:
    m = p.msg
    return {"msg_id": m.msg_id, "platform": m.platform, "group_id": m.group_id,
            "user_id": m.user_id, "text": m.text, "ts": m.ts, "msg_type": m.msg_type,
            "tags": [{"tag": h.tag, "confidence": h.confidence} for h in p.result.tags]}


def message_key(user_id: str, msg_id: str) -> str:
    """Return the store key of a retained message."""
    return f"{user_id}/{msg_id}"
