"""Chat-archive ingest: a JSONL file of CONTRACTS §2 messages into the inbox queue.

Resumable: the byte offset of the last fully queued line is kept in the store, written only
after the lines before it are durably queued (LinkWeChat advances its cursor first and loses
messages on a crash; here a crash re-reads a few lines, which the msg_id dedup then skips).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from bot.inbox import Inbox
from models.messages import ChatMessage
from store import Store

PROGRESS_NS = "bot.ingest"
_FINGERPRINT_BYTES = 4096
_MAX_ERRORS_KEPT = 100


@dataclass
class IngestReport:
    """What one run did."""

    accepted: int = 0
    duplicates: int = 0
    error_count: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, message)
    resumed_at_line: int = 0  # lines skipped because an earlier run had queued them
    lines: int = 0  # lines read by this run
    done: bool = False  # the whole file has been read
    # Lines read but not queued as messages, by why (wecom-archive: media, recalls, consent…).
    skipped: dict[str, int] = field(default_factory=dict)


def _file_key(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]


def _fingerprint(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.sha256(f.read(_FINGERPRINT_BYTES)).hexdigest()


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "message"
    return f"{loc}: {first.get('msg', 'invalid')}"


def parse_line(raw: bytes) -> ChatMessage:
    """Return the message of one JSONL line, or raise ValueError with a readable reason."""
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    try:
        return ChatMessage.model_validate(obj)
    except ValidationError as e:
        raise ValueError(_describe(e)) from e


def ingest_jsonl(
    path: Path,
    *,
    inbox: Inbox,
    store: Store,
    on_progress: Callable[[int], None] | None = None,
    limit: int | None = None,
    restart: bool = False,
    checkpoint_every: int = 500,
    line_handler: Callable[[bytes, int, IngestReport], None] | None = None,
) -> IngestReport:
    """Queue every message of a JSONL file, resuming after the last run's checkpoint.

    on_progress receives the number of bytes consumed since its last call. limit stops after
    that many lines (the next run goes on from there). restart ignores the checkpoint.
    line_handler(raw, line number, report) queues one line of another format (default: a
    CONTRACTS §2 message through the inbox); it returns once the line is durably queued.
    """
    key = _file_key(path)
    size = path.stat().st_size
    fingerprint = _fingerprint(path)
    report = IngestReport()
    offset = 0
    line_no = 0
    saved = None if restart else store.get(PROGRESS_NS, key)
    if (saved is not None and saved.doc.get("fingerprint") == fingerprint
            and int(saved.doc.get("offset", 0)) <= size):
        offset = int(saved.doc["offset"])
        line_no = int(saved.doc.get("line", 0))
        report.resumed_at_line = line_no
    if on_progress is not None and offset:
        on_progress(offset)

    def checkpoint() -> None:
        store.put(PROGRESS_NS, key, {"path": str(path.resolve()), "offset": offset,
                                     "line": line_no, "fingerprint": fingerprint,
                                     "size": size})

    try:
        with path.open("rb") as f:
            f.seek(offset)
            since_checkpoint = 0
            while limit is None or report.lines < limit:
                raw = f.readline()
                if not raw:
                    report.done = True
                    break
                if raw.strip():
                    if line_handler is None:
                        _queue_line(raw, line_no + 1, inbox, report)
                    else:
                        line_handler(raw, line_no + 1, report)
                # Advanced only once the line is durably queued (or reported as bad).
                line_no += 1
                report.lines += 1
                offset += len(raw)
                if on_progress is not None:
                    on_progress(len(raw))
                since_checkpoint += 1
                if since_checkpoint >= checkpoint_every:
                    checkpoint()
                    since_checkpoint = 0
            else:
                report.done = f.read(1) == b""
    finally:
        # Also on Ctrl-C or a failed store call: what was queued stays done.
        checkpoint()
    return report


def _queue_line(raw: bytes, line_no: int, inbox: Inbox, report: IngestReport) -> None:
    try:
        msg = parse_line(raw)
    except ValueError as e:
        report.error_count += 1
        if len(report.errors) < _MAX_ERRORS_KEPT:
            report.errors.append((line_no, str(e)))
        return
    if inbox.accept_message(msg):
        report.accepted += 1
    else:
        report.duplicates += 1
