"""`mingpian sync` against a local HTTP server that speaks the mall's paging protocol."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app import cli
from app.settings import get_settings
from catalog.repo import CatalogRepo
from catalog_sync.source import MallSource
from catalog_sync.sync import source_key, sync_catalog
from models.errors import UpstreamError
from store.base import Store
from tests.catalog_sync.support import CountingEmbedder, Mall, item_json, serve_mall

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _stamp(i: int) -> str:
    return f"2026-11-01T{8 + i // 60:02d}:{i % 60:02d}:00Z"


@pytest.fixture
def mall() -> Iterator[Mall]:
    m = Mall()
    m.put(*[item_json(f"sku-{i:03d}", title=f"商品{i}", updated_at=_stamp(i)) for i in range(23)])
    with serve_mall(m) as running:
        yield running


def _source(mall: Mall) -> MallSource:
    return MallSource(mall.url, retries=1, backoff_s=0.01)


def test_full_then_incremental_sync(store: Store, mall: Mall) -> None:
    emb = CountingEmbedder()
    repo = CatalogRepo(store, embedder=emb)
    report = sync_catalog(repo, _source(mall), page_size=5, progress=False, clock=lambda: NOW)
    assert report.complete and report.pages == 5 and report.fetched == 23
    assert (report.stats.created, report.stats.embedded) == (23, 23)
    assert repo.count() == 23
    assert [p for p, _, _ in mall.requests] == [1, 2, 3, 4, 5]
    assert all(since is None for _, _, since in mall.requests)
    assert report.watermark == _stamp(22)  # the newest item seen (older than now − margin)

    # The mall changes two items (one text, one price) and adds one.
    mall.put(item_json("sku-003", title="新标题", updated_at="2026-11-02T00:00:00Z"),
             item_json("sku-004", title="商品4", price_cents=1, updated_at="2026-11-02T00:00:01Z"),
             item_json("sku-100", updated_at="2026-11-02T00:00:02Z"))
    mall.requests.clear()
    emb.texts.clear()
    again = sync_catalog(repo, _source(mall), page_size=5, progress=False, clock=lambda: NOW)
    assert [since for _, _, since in mall.requests] == [_stamp(22)]  # only what changed
    assert (again.stats.created, again.stats.updated, again.stats.unchanged) == (1, 2, 1)
    assert again.stats.embedded == 2 and len(emb.texts) == 2  # sku-004's text did not change
    assert repo.count() == 24


def test_interrupted_sync_resumes_at_the_failed_page(store: Store, mall: Mall) -> None:
    repo = CatalogRepo(store, embedder=CountingEmbedder())
    mall.fail_pages[3] = -1  # the mall keeps failing page 3
    with pytest.raises(UpstreamError):
        sync_catalog(repo, _source(mall), page_size=5, progress=False, clock=lambda: NOW)
    assert repo.count() == 10  # pages 1 and 2 were committed
    cursor = repo.get_cursor(source_key(mall.url))
    assert cursor is not None and cursor["run"]["next_page"] == 3
    assert cursor["since"] is None  # the watermark moves only when a run finishes

    mall.fail_pages.clear()
    mall.requests.clear()
    report = sync_catalog(repo, _source(mall), page_size=5, progress=False, clock=lambda: NOW)
    assert report.resumed_at_page == 3 and report.complete
    assert [p for p, _, _ in mall.requests] == [3, 4, 5]  # pages 1–2 are not fetched again
    assert repo.count() == 23 and report.stats.created == 13
    done = repo.get_cursor(source_key(mall.url))
    assert done is not None and done["run"] is None and done["since"] == _stamp(22)


def test_transient_errors_are_retried(store: Store, mall: Mall) -> None:
    repo = CatalogRepo(store, embedder=CountingEmbedder())
    mall.fail_pages[2] = 1  # fails once, then answers
    report = sync_catalog(repo, _source(mall), page_size=10, progress=False, clock=lambda: NOW)
    assert report.complete and repo.count() == 23
    assert [p for p, _, _ in mall.requests] == [1, 2, 2, 3]


def test_invalid_items_are_reported_not_fatal(store: Store, mall: Mall) -> None:
    mall.put(item_json("sku-bad", price_cents=-1, updated_at=_stamp(30)),
             {"id": "sku-worse", "updated_at": _stamp(31)})
    repo = CatalogRepo(store, embedder=CountingEmbedder())
    report = sync_catalog(repo, _source(mall), page_size=10, progress=False, clock=lambda: NOW)
    assert report.complete and report.rejected == 2 and repo.count() == 23
    assert {e.id for e in report.errors} == {"sku-bad", "sku-worse"}


def test_full_resync_reads_everything_but_embeds_nothing(store: Store, mall: Mall) -> None:
    emb = CountingEmbedder()
    repo = CatalogRepo(store, embedder=emb)
    sync_catalog(repo, _source(mall), page_size=50, progress=False, clock=lambda: NOW)
    emb.texts.clear()
    mall.requests.clear()
    report = sync_catalog(repo, _source(mall), page_size=50, full=True, progress=False,
                          clock=lambda: NOW)
    assert mall.requests == [(1, 50, None)]
    assert report.stats.unchanged == 23 and emb.texts == []


def test_cli_sync_shows_progress_and_resumes(tmp_path: Path, mall: Mall,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MINGPIAN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MINGPIAN_EMBEDDER", "hash:64")
    monkeypatch.delenv("MINGPIAN_REDIS_URL", raising=False)
    get_settings.cache_clear()
    try:
        mall.fail_pages[2] = -1
        assert cli.main(["sync", "--source", mall.url, "--page-size", "10",
                         "--retries", "0"]) == 1
        err = capsys.readouterr().err
        assert "run the same command again to resume" in err
        mall.fail_pages.clear()
        assert cli.main(["sync", "--source", mall.url, "--page-size", "10"]) == 0
        out, err = capsys.readouterr()
        assert "resumed at page 2" in out and "13 items in 2 pages" in out
        # tqdm: count of the total, a rate in items/s and a remaining-time estimate.
        assert "/23" in err and "items/s" in err and "<" in err
    finally:
        get_settings.cache_clear()
