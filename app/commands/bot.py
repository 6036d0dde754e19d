"""CLI verbs of the bot domain: `mingpian ingest FILE.jsonl`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.commands import Verbs, add_verb
from app.settings import Settings

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
    try:
        with tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=path.name,
                  disable=args.quiet, file=sys.stderr) as bar:
            report = ingest_jsonl(path, inbox=inbox, store=store, on_progress=bar.update,
                                  limit=args.limit, restart=args.restart)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to go on where it stopped",
              file=sys.stderr)
        return 130
    finally:
        store.close()
    for line, err in report.errors[:_SHOWN_ERRORS]:
        print(f"  line {line}: {err}", file=sys.stderr)
    if report.error_count > _SHOWN_ERRORS:
        print(f"  … and {report.error_count - _SHOWN_ERRORS} more", file=sys.stderr)
    resumed = f" (resumed after line {report.resumed_at_line})" if report.resumed_at_line else ""
    state = "done" if report.done else "stopped early; run again to go on"
    print(f"{path}: {report.accepted} accepted, {report.duplicates} duplicates, "
          f"{report.error_count} errors in {report.lines} lines{resumed}; {state}")
    return 1 if report.error_count else 0


_INGEST_HELP = ("Queue every message of FILE (one CONTRACTS §2 JSON object per line) for "
                "tagging. Shows a progress bar. Re-running after an interruption goes on from the "
                "last checkpoint; messages already queued (same msg_id) are skipped as duplicates.")


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
