"""`mingpian ingest --format wecom-archive FILE`: decrypted chat-archive messages, one native
JSON object a line (WECOM.md §2.5), as other tools export them (issue 14 point 6).

Each line goes through the same mapping and rules as `mingpian archive pull` (bot/archive/
apply.py): recalls, consent, groups, media skipped; messages are queued with the same
msg_id dedup keys, so a message both pulled and ingested is queued once.
"""

from __future__ import annotations

import json

from bot.archive.apply import Applier
from bot.ingest import IngestReport
from store import Store

_MAX_ERRORS_KEPT = 100


class ArchiveLines:
    """A line handler for bot.ingest.ingest_jsonl (its `line_handler`)."""

    def __init__(self, applier: Applier, *, store: Store, queue: str, dedup_ttl_s: int) -> None:
        self.applier = applier
        self.store = store
        self.queue = queue
        self.dedup_ttl_s = dedup_ttl_s

    def _error(self, report: IngestReport, line_no: int, why: str) -> None:
        report.error_count += 1
        if len(report.errors) < _MAX_ERRORS_KEPT:
            report.errors.append((line_no, why))

    def __call__(self, raw: bytes, line_no: int, report: IngestReport) -> None:
        """Queue what one line holds (or record why not); return once it is durable."""
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            self._error(report, line_no, f"not JSON: {e}")
            return
        if not isinstance(doc, dict):
            self._error(report, line_no, "not a JSON object")
            return
        applied = self.applier.apply([doc])
        if applied.counts.get("invalid"):
            self._error(report, line_no, "not an archive message (msgid, from, msgtime)")
            return
        if applied.items:
            out = self.store.enqueue_many(self.queue, applied.items, dedup_ttl_s=self.dedup_ttl_s)
            report.accepted += sum(out)
            report.duplicates += len(out) - sum(out)
        for k, v in applied.counts.items():
            if k != "messages":
                report.skipped[k] = report.skipped.get(k, 0) + v
