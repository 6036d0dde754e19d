"""Decrypted archive messages → inbox queue items, with consent, group filters and recalls.

Shared by the SDK puller (bot/archive/pull.py) and the export ingest (`mingpian ingest
--format wecom-archive`). Every side effect here is idempotent and happens *before* the
caller commits the items (and, for the puller, its cursor): a crash replays a page, and
replaying it does the same things again, harmlessly.

- Groups: ``rooms`` allowed (empty = every group), ``excluded_rooms`` never; one-to-one
  chats only with ``direct_chats``.
- Consent (issue 14 point 5): an external contact whose latest answer is ``disagree`` (an
  archive ``disagree`` message, or ``Disagree`` from ``check_single_agree`` when configured)
  is not profiled, and the first time we learn it their data is erased (``erase``, the app's
  erasure: profile, queued items, replies, cards…). The erasure runs before the answer is
  recorded, so a crash between the two erases again rather than never.
- Recall: a message recalled in the same batch is never queued; one queued earlier gets the
  profiles' once-marker now, so a worker that has not applied it yet never will (nlp/profile.py
  applies a message under ``profile:<msg_id>``; a commit that finds it set is a duplicate).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.archive.api import AGREE, DISAGREE, ArchiveApi
from bot.archive.native import Mapped, is_external, map_native
from bot.consent import NS_CONSENT, ConsentBook
from bot.dedup import message_key, safe_id
from bot.inbox import KIND_MESSAGE
from models.errors import UpstreamError
from models.messages import ChatMessage
from nlp.privacy import redact_message
from nlp.profile import applied_marker
from store import Batch, Store
from store.base import JSON

log = logging.getLogger("mingpian.archive")

ROOMS_NS = "archive.rooms"  # roomid → {"name": str, "at": seconds} (groupchat/get), with a TTL
AGREE_NS = "archive.agree"  # "<member>|<external>" → {"status", "at"} (check_single_agree)
# A record in the profiles' family for the recall's commit to carry (a Batch writes one
# family).
RECALLED_NS = "profile.recalled"


@dataclass(frozen=True)
class ArchiveRules:
    """Which messages are taken (plain values from MINGPIAN_ARCHIVE__*)."""

    rooms: frozenset[str] = frozenset()
    excluded_rooms: frozenset[str] = frozenset()
    direct_chats: bool = False
    agree_cache_s: int = 3600
    room_name_ttl_s: int = 86_400
    recall_ttl_s: int = 30 * 86_400


@dataclass
class Applied:
    """What a batch came to: queue items (payload, dedup key) and counts by outcome."""

    items: list[tuple[JSON, str]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


def message_item(msg: ChatMessage) -> tuple[JSON, str]:
    """Return the inbox item of a message: what Inbox.accept_message queues (redacted, keyed
    by msg_id, so an archive message and the same one from an export are one)."""
    return ({"kind": KIND_MESSAGE, "message": redact_message(msg).model_dump(mode="json")},
            message_key(msg.msg_id))


class Applier:
    """Turns batches of decrypted archive messages into inbox items, once their side effects
    (consent, erasure, recall markers, group names) are done."""

    def __init__(self, store: Store, *, rules: ArchiveRules, erase: Callable[[str], None],
                 api: ArchiveApi | None = None, check_agree: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.rules = rules
        self.erase = erase
        self.api = api
        self.check_agree = check_agree and api is not None
        self.clock = clock
        self.consent = ConsentBook(store)

    def apply(self, docs: Sequence[Mapping[str, Any]]) -> Applied:
        """Map, filter and prepare a batch, in order; return the items to queue."""
        out = Applied()
        pending: dict[str, Mapped] = {}
        for doc in docs:
            try:
                m = map_native(doc)
            except ValueError as e:
                out.counts["invalid"] += 1
                log.warning("archive message skipped: %s", e)
                continue
            self._one(m, pending, out)
        kept = self._consented(list(pending.values()), out)
        self._name_rooms(kept)
        out.items = [message_item(m.message) for m in kept if m.message is not None]
        out.counts["messages"] += len(out.items)
        return out

    def _one(self, m: Mapped, pending: dict[str, Mapped], out: Applied) -> None:
        if m.skip is not None:
            out.counts[m.skip if m.skip.startswith("media:") else "skipped:" + m.skip] += 1
        elif m.consent is not None:
            who, agree, at = m.consent
            self.record_consent(who, agree=agree, at=at)
            out.counts["consent:agree" if agree else "consent:disagree"] += 1
        elif m.recalled is not None:
            out.counts["recalled"] += 1
            if pending.pop(m.recalled, None) is None:
                self.mark_recalled(m.recalled)
        elif m.message is not None:
            if not self._room_allowed(m.room):
                out.counts["skipped:direct" if not m.room else "skipped:room"] += 1
            else:
                pending[m.message.msg_id] = m

    def _room_allowed(self, room: str) -> bool:
        r = self.rules
        if not room:
            return r.direct_chats
        return room not in r.excluded_rooms and (not r.rooms or room in r.rooms)

    def record_consent(self, external: str, *, agree: bool, at: float) -> None:
        """Keep a contact's answer; a new "disagree" erases their data first."""
        rec = self.store.get(NS_CONSENT, external)
        newer = rec is not None and float(rec.doc.get("at", 0)) > at
        if not agree and not newer and (rec is None or rec.doc.get("agree") is not False):
            log.info("archive: an external contact disagreed; erasing their data")
            self.erase(safe_id(external))
        self.consent.record(external, agree=agree, at=at)

    def mark_recalled(self, msg_id: str) -> None:
        """Make sure a recalled message is never applied to a profile (if not yet applied)."""
        self.store.commit(Batch(once=applied_marker(msg_id),
                                incrs=[(RECALLED_NS, "archive", 1)],
                                once_ttl_s=self.rules.recall_ttl_s))

    def _consented(self, pending: list[Mapped], out: Applied) -> list[Mapped]:
        externals = sorted({m.sender for m in pending if is_external(m.sender)})
        if self.check_agree:
            self._check_agree([(m.peer, m.sender) for m in pending
                               if is_external(m.sender) and m.peer])
        answers = self.store.get_many(NS_CONSENT, externals) if externals else {}
        refused = {e for e, rec in answers.items() if rec.doc.get("agree") is False}
        kept = [m for m in pending if m.sender not in refused]
        out.counts["skipped:no_consent"] += len(pending) - len(kept)
        return kept

    def _check_agree(self, pairs: list[tuple[str, str]]) -> None:
        wanted = list(dict.fromkeys(pairs))
        keys = [f"{u}|{e}" for u, e in wanted]
        cached = self.store.get_many(AGREE_NS, keys)
        todo = [p for p, k in zip(wanted, keys, strict=True) if k not in cached]
        if not todo or self.api is None:
            return
        try:
            answers = self.api.check_single_agree(todo)
        except UpstreamError as e:
            # Not known to have refused: taken for now, asked again with the next batch.
            log.warning("check_single_agree failed (%s); asking again later", e)
            return
        for a in answers:
            self.store.put(AGREE_NS, f"{a.userid}|{a.external}",
                           {"status": a.status, "at": a.changed_at},
                           ttl_s=self.rules.agree_cache_s)
            if a.status == DISAGREE:
                self.record_consent(a.external, agree=False, at=a.changed_at or self.clock())
            elif a.status == AGREE:  # Default_Agree is no answer of theirs: not recorded
                self.record_consent(a.external, agree=True, at=a.changed_at)

    def _name_rooms(self, kept: list[Mapped]) -> None:
        if self.api is None:
            return
        rooms = sorted({m.room for m in kept if m.room})
        known = self.store.get_many(ROOMS_NS, rooms) if rooms else {}
        for room in rooms:
            if room in known:
                continue
            try:
                name = self.api.room_name(room)
            except UpstreamError as e:
                log.info("no name for group %s (%s)", room, e)
                name = ""
            self.store.put(ROOMS_NS, room, {"name": name, "at": self.clock()},
                           ttl_s=self.rules.room_name_ttl_s)


def room_names(store: Store) -> dict[str, str]:
    """Return the group names learnt from groupchat/get (roomid → name; "" when unknown)."""
    return {k: str(rec.doc.get("name", "")) for k, rec in store.scan(ROOMS_NS)}
