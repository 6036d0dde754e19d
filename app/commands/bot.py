"""CLI verbs of the bot domain: `mingpian ingest FILE.jsonl`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from app.commands import Verbs, add_verb
from app.settings import Settings

if TYPE_CHECKING:
    from store import Store

_SHOWN_ERRORS = 20  # bad lines printed; the rest are counted


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from app.services import INBOX
    from bot.inbox import Inbox
    from bot.ingest import ingest_jsonl
    from store import open_store

    path = Path(args.file)
    if not path.is_file():
        print(f"mingpian ingest: no such file: {path}", file=sys.stderr)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Only the store: ingest queues, the worker (or embedded serve) tags.
    store = open_store(redis_url=settings.redis_url, data_dir=settings.data_dir)
    inbox = Inbox(store, queue=INBOX, dedup_ttl_s=settings.dedup_ttl_days * 86_400)
    closing = _archive_format(args, settings, store)  # --format wecom-archive (issue 14)
    try:
        with tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=path.name,
                  disable=args.quiet, file=sys.stderr) as bar:
            report = ingest_jsonl(path, inbox=inbox, store=store, on_progress=bar.update,
                                  limit=args.limit, restart=args.restart,
                                  line_handler=closing.handler if closing else None)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to go on where it stopped",
              file=sys.stderr)
        return 130
    finally:
        if closing is not None:
            closing.close()  # the archive's erasure services (and the store with them)
        store.close()
    for line, err in report.errors[:_SHOWN_ERRORS]:
        print(f"  line {line}: {err}", file=sys.stderr)
    if report.error_count > _SHOWN_ERRORS:
        print(f"  … and {report.error_count - _SHOWN_ERRORS} more", file=sys.stderr)
    resumed = f" (resumed after line {report.resumed_at_line})" if report.resumed_at_line else ""
    state = "done" if report.done else "stopped early; run again to go on"
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(report.skipped.items()))
    print(f"{path}: {report.accepted} accepted, {report.duplicates} duplicates, "
          f"{report.error_count} errors in {report.lines} lines{resumed}; {state}"
          + (f"\n  not queued: {skipped}" if skipped else ""))
    return 1 if report.error_count else 0


_INGEST_HELP = ("Queue every message of FILE (one CONTRACTS §2 JSON object per line) for "
                "tagging. Shows a progress bar. Re-running after an interruption goes on from the "
                "last checkpoint; messages already queued (same msg_id) are skipped as duplicates.")


class _ArchiveIngest:
    """The wecom-archive line handler and what it holds open."""

    def __init__(self, settings: Settings, store: Store) -> None:
        import httpx

        from app.commands.archive import QUEUE, LazyErasure, build_applier
        from bot.archive.exports import ArchiveLines

        self.erase = LazyErasure(settings, store)
        self.http = httpx.Client(timeout=10.0)
        applier = build_applier(settings, store, erase=self.erase, http=self.http)
        self.handler = ArchiveLines(applier, store=store, queue=QUEUE,
                                    dedup_ttl_s=settings.dedup_ttl_days * 86_400)

    def close(self) -> None:
        self.http.close()
        if self.erase.services is not None:
            self.erase.services.close()


def _archive_format(args: argparse.Namespace, settings: Settings,
                    store: Store) -> _ArchiveIngest | None:
    return _ArchiveIngest(settings, store) if args.format == "wecom-archive" else None


def register(sub: Verbs) -> None:
    """Add this domain's verbs to the parser."""
    p = add_verb(sub, "ingest", _ingest, description=_INGEST_HELP,
                 help="queue chat messages from a JSONL file (e.g. a WeCom chat-archive export)")
    p.add_argument("file", metavar="FILE.jsonl", help="the file to read")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="stop after N lines (the next run goes on from there)")
    p.add_argument("--restart", action="store_true",
                   help="ignore the saved position and read from the first line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--format", choices=("mingpian", "wecom-archive"), default="mingpian",
                   help="mingpian: CONTRACTS §2 messages (default); wecom-archive: decrypted "
                   "WeCom chat-archive messages (会话内容存档, one native JSON object a line)")
