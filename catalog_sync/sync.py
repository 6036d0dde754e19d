"""``mingpian sync``: fetch → validate → diff → embed changed texts → upsert (→ the index
follows the change log).

A run pages through ``updated_since=<watermark>``. After every page the items *and* the
cursor (next page, watermark candidate) are committed in one batch, so an interrupted run
resumes at the first page it had not committed, and a finished run moves the watermark so
the next run fetches only what changed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tqdm import tqdm

from catalog.repo import CatalogRepo, PreparedUpsert, UpsertStats
from catalog_sync.loader import ItemError, split_valid
from catalog_sync.source import MallSource, Page
from models.catalog import CatalogItem
from models.times import format_rfc3339

log = logging.getLogger("mingpian.sync")

# Items the mall changes while a run pages may move between pages; and our clock and the
# mall's may differ. The next run therefore starts this far before the run's start.
SAFETY_MARGIN = timedelta(minutes=5)
MAX_ERRORS_KEPT = 100


@dataclass
class SyncReport:
    """What one sync run did."""

    source: str
    since: str | None
    resumed_at_page: int | None
    pages: int = 0
    fetched: int = 0
    rejected: int = 0
    stats: UpsertStats = field(default_factory=UpsertStats)
    errors: list[ItemError] = field(default_factory=list)
    watermark: str | None = None
    elapsed_s: float = 0.0
    complete: bool = False

    @property
    def items_per_s(self) -> float:
        """Return fetched items per second of the run."""
        return self.fetched / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        """Return one human line."""
        s = self.stats
        resumed = f", resumed at page {self.resumed_at_page}" if self.resumed_at_page else ""
        return (f"sync {'complete' if self.complete else 'INCOMPLETE'}: {self.fetched} items in "
                f"{self.pages} pages{resumed} ({self.items_per_s:.0f} items/s); "
                f"{s.created} new, {s.updated} changed, {s.unchanged} unchanged, "
                f"{s.stale} stale, {s.embedded} embedded, {self.rejected} rejected; "
                f"next run fetches updated_since={self.watermark or 'everything'}")


def source_key(url: str) -> str:
    """Return the cursor key of a source: a hash of its URL without query or fragment."""
    parts = urlsplit(url.strip())
    bare = urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), "",
                       ""))
    return "src-" + hashlib.blake2b(bare.encode(), digest_size=12).hexdigest()


def sync_catalog(
    repo: CatalogRepo,
    source: MallSource,
    *,
    page_size: int = 200,
    full: bool = False,
    first_page: int = 1,
    progress: bool = True,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SyncReport:
    """Run (or resume) a sync of the source into the catalog; return what it did.

    ``full`` ignores the watermark and re-reads everything (unchanged items cost a compare,
    not an embedding). A failing page raises UpstreamError after the source's retries; what
    was committed stays, and the next call resumes there.
    """
    key = source_key(source.url)
    cursor: dict[str, Any] = repo.get_cursor(key) or {"since": None, "run": None}
    run: dict[str, Any] | None = cursor.get("run")
    if run is not None and full and not run.get("full"):
        run = None  # an interrupted incremental run is superseded by a full one
    resumed = run is not None
    if run is None:
        run = _new_run(cursor, source, full=full, first_page=first_page, clock=clock)
    report = SyncReport(source=_display(source.url), since=run["since"],
                        resumed_at_page=run["next_page"] if resumed else None)
    started = time.perf_counter()
    bar = tqdm(desc="sync", unit=" items", disable=not progress, initial=run["fetched"],
               dynamic_ncols=True)

    since: str | None = run["since"]

    def fetch(page: int, offset: int) -> tuple[Page, list[CatalogItem], list[ItemError]]:
        got = source.fetch(page=page, page_size=page_size, updated_since=since)
        good, bad = split_valid((offset + i, raw) for i, raw in enumerate(got.items))
        return got, good, bad

    # Three stages overlap: the next page is fetched and validated, this page is diffed and
    # embedded (the bottleneck), the previous page is committed. Commits stay in page order,
    # each with its cursor, so an interruption still resumes at the first uncommitted page.
    fetcher = ThreadPoolExecutor(1, thread_name_prefix="sync-fetch")
    writer = ThreadPoolExecutor(1, thread_name_prefix="sync-write")
    writing: Future[UpsertStats] | None = None
    page: int | None = run["next_page"]
    ahead: Future[tuple[Page, list[CatalogItem], list[ItemError]]] | None = (
        fetcher.submit(fetch, page, run["fetched"]) if page is not None else None)
    try:
        while ahead is not None:
            got, good, bad = ahead.result()
            offset = run["fetched"]
            ahead = (fetcher.submit(fetch, got.next_page, offset + len(got.items))
                     if got.next_page is not None else None)
            if got.total is not None:
                bar.total = got.total
            run = {**run, "max_seen": _max_seen(run["max_seen"], good),
                   "next_page": got.next_page, "fetched": offset + len(got.items)}
            new_cursor = _next_cursor(run, cursor, source, report, clock)
            prepared = repo.prepare(good, extra_puts=[repo.cursor_put(key, new_cursor)])
            if writing is not None:
                report.stats.add(writing.result())
            writing = writer.submit(_write, repo, prepared)
            _tally(report, got, bad)
            bar.update(len(got.items))
        if writing is not None:
            report.stats.add(writing.result())
            writing = None
        report.complete = True
    finally:
        if writing is not None:  # interrupted: what was prepared is still committed
            with suppress(Exception):
                report.stats.add(writing.result())
        fetcher.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)
        bar.close()
        report.elapsed_s = time.perf_counter() - started
        report.stats.changed_ids = report.stats.changed_ids[-1000:]
    return report


def _write(repo: CatalogRepo, prepared: list[PreparedUpsert]) -> UpsertStats:
    stats = UpsertStats()
    for chunk in prepared:
        stats.add(repo.apply(chunk))
    return stats


def _new_run(cursor: dict[str, Any], source: MallSource, *, full: bool, first_page: int,
             clock: Callable[[], datetime]) -> dict[str, Any]:
    """Return the state of a run that starts now (kept in the cursor until it finishes)."""
    return {"since": None if full else cursor.get("since"), "next_page": first_page,
            "started_at": format_rfc3339(clock()), "max_seen": None, "fetched": 0,
            "full": full, "url": _display(source.url)}


def _max_seen(max_seen: str | None, good: list[CatalogItem]) -> str | None:
    """Return the newest updated_at among max_seen and the page's items."""
    for it in good:
        if it.updated_at is not None:
            ts = format_rfc3339(it.updated_at)
            if max_seen is None or _dt(ts) > _dt(max_seen):
                max_seen = ts
    return max_seen


def _next_cursor(run: dict[str, Any], cursor: dict[str, Any], source: MallSource,
                 report: SyncReport, clock: Callable[[], datetime]) -> dict[str, Any]:
    """Return the cursor committed with this page; after the last page, set the watermark."""
    if run["next_page"] is None:
        report.watermark = _watermark(run, previous=cursor.get("since"))
        return {"since": report.watermark, "run": None, "url": _display(source.url),
                "finished_at": format_rfc3339(clock())}
    return {"since": cursor.get("since"), "run": run, "url": _display(source.url)}


def _tally(report: SyncReport, got: Page, bad: list[ItemError]) -> None:
    """Count a fetched page into the report, keeping the first MAX_ERRORS_KEPT errors."""
    report.pages += 1
    report.fetched += len(got.items)
    report.rejected += len(bad)
    room = MAX_ERRORS_KEPT - len(report.errors)
    report.errors += bad[: max(room, 0)]
    for e in bad[:3]:
        log.warning("mall item #%d (%s) rejected: %s", e.index, e.id, e.errors[:2])


def _watermark(run: dict[str, Any], *, previous: str | None) -> str | None:
    """Return the next run's updated_since: no later than the newest item seen, and no later
    than the run's start minus the safety margin."""
    if run["max_seen"] is None:
        return previous
    start_bound = _dt(run["started_at"]) - SAFETY_MARGIN
    return format_rfc3339(min(_dt(run["max_seen"]), start_bound))


def _dt(s: str) -> datetime:
    return datetime.fromisoformat(s)


def _display(url: str) -> str:
    # Query strings may carry the mall's token: never store or print them.
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
