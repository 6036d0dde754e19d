"""CLI verbs of the catalog domain: ``mingpian sync`` and ``mingpian catalog import``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from app.commands import Verbs, add_verb, verb_group
from app.settings import Settings

if TYPE_CHECKING:
    from catalog.repo import CatalogRepo
    from store import Store


def _repo(settings: Settings, *, threads: int) -> tuple[Store, CatalogRepo]:
    from catalog.repo import CatalogRepo
    from nlp.embed import load_embedder
    from store import open_store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(redis_url=settings.redis_url, data_dir=settings.data_dir)
    return store, CatalogRepo(store, embedder=load_embedder(settings.embedder, threads=threads))


_THREADS_HELP = ("threads the embedder may use (1). More is faster only on an otherwise idle "
                 "machine: on 2 busy cores, 2 BLAS threads embed 4x slower than 1 (measured)")


def _sync(args: argparse.Namespace, settings: Settings) -> int:
    from catalog_sync.source import MallSource
    from catalog_sync.sync import sync_catalog
    from models.errors import UpstreamError

    headers: dict[str, str] = {}
    for h in args.header or []:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            print(f"--header wants 'Name: value', got {h!r}", file=sys.stderr)
            return 2
        headers[name.strip()] = value.strip()
    store, repo = _repo(settings, threads=args.threads)
    source = MallSource(args.source, headers=headers, timeout_s=args.timeout,
                        retries=args.retries)
    try:
        report = sync_catalog(repo, source, page_size=args.page_size, full=args.full,
                              progress=not args.no_progress)
    except UpstreamError as e:
        print(f"sync interrupted: {e.message}\nrun the same command again to resume",
              file=sys.stderr)
        return 1
    finally:
        source.close()
        store.close()
    print(report.summary())
    for err in report.errors[:20]:
        print(f"  rejected item #{err.index} ({err.id}): {json.dumps(err.errors[:3], ensure_ascii=False)}")
    return 0


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from catalog_sync.loader import demo_catalog_path, import_rows, read_jsonl

    if args.demo == (args.file is not None):
        print("give a FILE.jsonl or --demo (not both)", file=sys.stderr)
        return 2
    path = demo_catalog_path() if args.demo else Path(args.file)
    if not path.is_file():
        print(f"no such file: {path}", file=sys.stderr)
        return 2
    store, repo = _repo(settings, threads=args.threads)
    try:
        with tqdm(desc="import", unit=" items", disable=args.no_progress) as bar:
            report = import_rows(repo, read_jsonl(path), on_progress=bar.update)
    finally:
        store.close()
    s = report.stats
    print(f"imported {path.name}: {report.received} lines, {s.created} new, {s.updated} changed, "
          f"{s.unchanged} unchanged, {s.stale} stale, {s.embedded} embedded, "
          f"{len(report.errors)} rejected")
    for err in report.errors[:20]:
        print(f"  line {err.index} ({err.id}): {json.dumps(err.errors[:3], ensure_ascii=False)}")
    return 0 if not report.errors else 1


_SYNC_HELP = ("Fetch ?page=N&page_size=M&updated_since=T pages from the mall, embed the "
              "items whose text changed and upsert them. Progress is committed page by page: an "
              "interrupted run resumes where it stopped; a finished run makes the next one fetch "
              "only what changed. Running serve processes pick the changes up by themselves.")
_IMPORT_HELP = ("Validate and upsert items; invalid lines are reported by line number "
                "and skipped (exit status 1), the rest are imported. --demo loads the bundled demo "
                "catalog (about 150 items, three providers).")


def register(sub: Verbs) -> None:
    """Add this domain's verbs to the parser."""
    s = add_verb(sub, "sync", _sync, description=_SYNC_HELP,
                 help="pull the catalog from the mall's paged API (resumable, incremental)")
    s.add_argument("--source", required=True, metavar="URL", help="the mall's catalog endpoint")
    s.add_argument("--page-size", type=int, default=200, help="items per page (200)")
    s.add_argument("--full", action="store_true",
                   help="ignore the watermark and re-read everything (unchanged items are "
                   "compared, not re-embedded)")
    s.add_argument("--header", action="append", metavar="'NAME: VALUE'",
                   help="an HTTP header for the mall (repeatable), e.g. an Authorization token")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds per request (30)")
    s.add_argument("--retries", type=int, default=3,
                   help="retries of a failed page, with exponential back-off (3)")
    s.add_argument("--threads", type=int, default=1, help=_THREADS_HELP)
    s.add_argument("--no-progress", action="store_true", help="no progress bar")

    csub = verb_group(sub, "catalog", help="catalog maintenance: import items from JSONL",
                      metavar="ACTION")
    i = add_verb(csub, "import", _import, description=_IMPORT_HELP,
                 help="upsert items from a JSONL file (one CONTRACTS §4 item per line)")
    i.add_argument("file", nargs="?", metavar="FILE.jsonl")
    i.add_argument("--demo", action="store_true", help="import the bundled demo catalog")
    i.add_argument("--threads", type=int, default=1, help=_THREADS_HELP)
    i.add_argument("--no-progress", action="store_true", help="no progress bar")
