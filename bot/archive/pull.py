"""`mingpian archive pull`: the chat archive's records → the inbox queue, never losing one.

The ``seq`` cursor is written **only in the same store commit as the messages it covers**
(`Store.enqueue_with_cursor`: one SQLite transaction, one Redis script). LinkWeChat saves
its seq before processing and loses a page on a crash (WECOM.md §2.9); here a crash at any
point leaves the cursor at the last committed page, the next run fetches the rest again, and
the msg_id dedup keys skip what had been queued. What else a page does (dead letters,
consent, erasure, recall markers) happens before that commit and is idempotent.

- 10001 (network) is retried with a bounded, jittered backoff (store/retry.py); other
  GetChatData codes stop the pull (they are configuration: secret, IP, certificate).
- A record that cannot be decrypted (10007 no private key for its ``publickey_ver``, a key
  that does not decrypt, DecryptData failing) is dead-lettered with its encrypted form in
  ``archive.dead`` (countable, listable, retried by `mingpian archive retry-dead` once the
  key is configured) and the pull goes on.
- Retention: WeCom serves about 5 days of messages (WECOM.md §2.6, UNCONFIRMED: older
  copies say 3). A cursor last moved longer ago than that may have missed messages: logged
  as a warning, with the seq gap when the first record is not cursor + 1 (seqs are
  increasing, not promised contiguous, so a gap alone is not proof).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.archive.apply import Applier
from bot.archive.sdk import ERR_NETWORK, ERR_PARSE, ChatRecord, PrivateKeys, SdkError
from store import Store
from store.base import JSON
from store.retry import AGAIN, Again, ContentionError, retry

log = logging.getLogger("mingpian.archive")

DEAD_NS = "archive.dead"  # sha1(msgid) → {"record", "code", "error", "at"}, with a TTL


class ChatSource(Protocol):
    """What the puller needs of the SDK (bot/archive/sdk.py FinanceSdk)."""

    def get_chat_data(self, seq: int, limit: int) -> list[ChatRecord]:
        """Return the records after seq, at most limit."""

    def decrypt(self, random_key: str, encrypt_chat_msg: str) -> bytes:
        """Return a record's plaintext JSON."""


@dataclass(frozen=True)
class PullConfig:
    """How the puller pages, retries and keeps its cursor."""

    queue: str
    cursor: str  # the cursor's name in the queue, e.g. "archive:<corp_id>"
    dedup_ttl_s: int
    page_size: int = 1000  # ≤ 1000 (the SDK's limit)
    timeout_s: int = 5
    network_attempts: int = 8
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    # VESIO's comment "一分钟内不得超过1000次调用"; a PHP wrapper says 600/min (UNCONFIRMED,
    # WECOM.md §2.6): the stricter one, 0.1 s between calls.
    min_call_interval_s: float = 0.1
    retention_s: float = 5 * 86_400
    dead_ttl_s: int = 30 * 86_400


@dataclass
class PullReport:
    """What one `pull` did."""

    pages: int = 0
    records: int = 0
    queued: int = 0
    duplicates: int = 0
    dead: int = 0
    seq: int = 0
    counts: Counter[str] = field(default_factory=Counter)


def dead_key(msgid: str) -> str:
    """Return the key of a record's dead letter."""
    return hashlib.sha1(msgid.encode()).hexdigest()


class Puller:
    """Pull the archive into the inbox queue, page by page, cursor with the page."""

    def __init__(self, store: Store, *, source: ChatSource, keys: PrivateKeys, applier: Applier,
                 config: PullConfig, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.source = source
        self.keys = keys
        self.applier = applier
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self._last_call = 0.0

    # -- the cursor --------------------------------------------------------------
    def cursor(self) -> JSON:
        """Return the cursor document: {"seq", "pulled_at", "msgtime", "counts"}."""
        return self.store.get_cursor(self.config.queue, self.config.cursor) or {"seq": 0}

    # -- one page ----------------------------------------------------------------
    def _fetch(self, seq: int) -> list[ChatRecord]:
        c = self.config

        def attempt(n: int) -> list[ChatRecord] | Again:
            wait = c.min_call_interval_s - (time.monotonic() - self._last_call)
            if wait > 0:
                self.sleep(wait)
            self._last_call = time.monotonic()
            try:
                return self.source.get_chat_data(seq, c.page_size)
            except SdkError as e:
                if e.code != ERR_NETWORK:
                    raise
                log.warning("GetChatData after seq %d: network error (try %d of %d)", seq,
                            n + 1, c.network_attempts)
                return AGAIN

        try:
            return retry(attempt, what="GetChatData", attempts=c.network_attempts,
                         base_s=c.backoff_base_s, cap_s=c.backoff_cap_s, sleep=self.sleep)
        except ContentionError as e:
            raise SdkError(ERR_NETWORK, f"GetChatData after {e.attempts} tries") from e

    def _decrypt(self, record: ChatRecord) -> Mapping[str, Any]:
        plain = self.source.decrypt(self.keys.random_key(record), record.encrypt_chat_msg)
        try:
            doc = json.loads(plain)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SdkError(ERR_PARSE, f"message of seq {record.seq}") from e
        if not isinstance(doc, dict):
            raise SdkError(ERR_PARSE, f"message of seq {record.seq}")
        return doc

    def _dead_letter(self, record: ChatRecord, err: SdkError) -> None:
        log.warning("archive record seq %d dead-lettered: %s", record.seq, err)
        self.store.put(DEAD_NS, dead_key(record.msgid),
                       {"record": record.to_json(), "code": err.code, "error": str(err),
                        "at": self.clock()}, ttl_s=self.config.dead_ttl_s)

    def pull_page(self, report: PullReport) -> int:
        """Pull, apply and commit one page after the cursor; return how many records came."""
        cur = self.cursor()
        seq = int(cur.get("seq", 0))
        records = self._fetch(seq)
        self._check_retention(cur, records)
        docs: list[Mapping[str, Any]] = []
        dead = 0
        for r in records:
            try:
                docs.append(self._decrypt(r))
            except SdkError as e:
                self._dead_letter(r, e)
                dead += 1
        applied = self.applier.apply(docs)
        counts = Counter({k: int(v) for k, v in (cur.get("counts") or {}).items()})
        counts.update(applied.counts)
        counts["dead"] += dead
        counts["records"] += len(records)
        msgtimes = [int(d["msgtime"]) for d in docs if isinstance(d.get("msgtime"), int)]
        doc: JSON = {"seq": records[-1].seq if records else seq, "pulled_at": self.clock(),
                     "msgtime": max(msgtimes, default=int(cur.get("msgtime", 0))),
                     "counts": dict(counts)}
        # The one commit: the page's messages and the cursor that covers them.
        out = self.store.enqueue_with_cursor(self.config.queue, applied.items,
                                             cursor=self.config.cursor, doc=doc,
                                             dedup_ttl_s=self.config.dedup_ttl_s)
        report.pages += 1
        report.records += len(records)
        report.queued += sum(out)
        report.duplicates += len(out) - sum(out)
        report.dead += dead
        report.seq = int(doc["seq"])
        report.counts.update(applied.counts)
        return len(records)

    def _check_retention(self, cur: JSON, records: list[ChatRecord]) -> None:
        pulled_at = cur.get("pulled_at")
        if not isinstance(pulled_at, int | float):
            return
        age = self.clock() - float(pulled_at)
        if age <= self.config.retention_s:
            return
        seq = int(cur.get("seq", 0))
        gap = records[0].seq - seq - 1 if records else 0
        log.warning("archive cursor last moved %.1f days ago, longer than WeCom keeps messages "
                    "(%.0f days): messages may have been lost%s", age / 86_400,
                    self.config.retention_s / 86_400,
                    f" (seq jumps from {seq} to {records[0].seq})" if gap > 0 else "")

    # -- runs --------------------------------------------------------------------
    def pull(self, *, stop: threading.Event | None = None, max_pages: int | None = None
             ) -> PullReport:
        """Pull pages until caught up (a page shorter than page_size), stop is set, or
        max_pages; return what was done."""
        report = PullReport(seq=int(self.cursor().get("seq", 0)))
        while stop is None or not stop.is_set():
            n = self.pull_page(report)
            if n < self.config.page_size or (max_pages is not None
                                             and report.pages >= max_pages):
                break
        return report

    def follow(self, stop: threading.Event, *, wake: Callable[[], int],
               poll_interval_s: float, wake_check_s: float = 1.0,
               on_report: Callable[[PullReport], None] | None = None) -> None:
        """Pull, then wait for the next poll or an earlier wake-up (the value wake()
        returns changes: a msgaudit_notify arrived), until stop is set."""
        while not stop.is_set():
            report = self.pull(stop=stop)
            if on_report is not None:
                on_report(report)
            seen = wake()
            deadline = time.monotonic() + poll_interval_s
            while not stop.is_set() and time.monotonic() < deadline:
                stop.wait(min(wake_check_s, max(0.0, deadline - time.monotonic())))
                if wake() != seen:
                    log.info("msgaudit_notify: pulling now")
                    break

    # -- dead letters --------------------------------------------------------------
    def dead_letters(self, *, limit: int = 100) -> list[JSON]:
        """Return up to limit dead letters (encrypted records, their code and error)."""
        return [rec.doc for _, rec in self.store.scan_page(DEAD_NS, limit=limit)]

    def retry_dead(self) -> tuple[int, int]:
        """Decrypt the dead letters again (a key may have been added) and queue what now
        decrypts; return (queued or already queued, still dead)."""
        done = still = 0
        for key, rec in list(self.store.scan(DEAD_NS)):
            try:
                record = ChatRecord.from_json(rec.doc.get("record") or {})
                doc = self._decrypt(record)
            except (SdkError, ValueError) as e:
                log.info("dead letter %s still does not decrypt: %s", key[:12], e)
                still += 1
                continue
            applied = self.applier.apply([doc])
            if applied.items:
                self.store.enqueue_many(self.config.queue, applied.items,
                                        dedup_ttl_s=self.config.dedup_ttl_s)
            self.store.delete(DEAD_NS, key)
            done += 1
        return done, still
