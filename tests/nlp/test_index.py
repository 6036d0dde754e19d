"""The faiss index: exact and IVF search with filters, following the catalog's change log,
atomic snapshot swaps, compaction and persistence."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from catalog.feed import IndexEntry
from catalog.repo import CHANGES, CatalogRepo
from models.catalog import CatalogItem
from nlp.index import VectorIndex
from store.base import Store
from tests.catalog_sync.support import CountingEmbedder, item
from tests.conftest import OpenSQLite

DIM = 64


def _repo(store: Store) -> CatalogRepo:
    return CatalogRepo(store, embedder=CountingEmbedder(DIM))


def _catalog(n: int, *, universal: bool = True) -> list[CatalogItem]:
    providers = ["sh-01", "bj-01", "gz-01"]
    out = []
    for i in range(n):
        avail = [] if i % 3 == 0 and universal else [
            {"provider_id": providers[i % 3], "price_cents": 100, "stock": i % 4}]
        out.append(item(f"sku-{i:04d}", title=f"商品{i} 型号{i * 7 % 13}",
                        description=f"描述{i % 17} 功能{i % 5}",
                        kind="course" if i % 5 == 0 else "product",
                        tags=[f"标签{i % 7}"], availability=avail))
    return out


def _brute(repo: CatalogRepo, q: np.ndarray, k: int, ok: Sequence[str]) -> list[float]:
    x = np.vstack([e.vector for e in repo.entries(list(ok)).values()])
    return sorted((x @ q).tolist(), reverse=True)[:k]


def test_exact_search_with_filters_matches_brute_force(store: Store) -> None:
    repo = _repo(store)
    items = _catalog(120)
    repo.upsert(items)
    index = VectorIndex(repo, dim=DIM)
    index.load()
    assert index.index_type == "exact" and len(index) == 120 and index.version == 120
    q = repo.embedder.encode(["商品7 型号10 描述3"])[0]
    cases = [(None, None), ("sh-01", None), (None, "course"), ("bj-01", "product")]
    for provider, kind in cases:
        ok = [it.id for it in items if it.is_available(provider)
              and (kind is None or it.kind == kind)]
        got = index.search(q, k=10, provider_id=provider, kind=kind)[0]
        assert {h.id for h in got} <= set(ok)
        np.testing.assert_allclose([h.score for h in got], _brute(repo, q, 10, ok), atol=1e-5)
    top = index.search(q, k=3)[0]
    rest = index.search(q, k=3, exclude={top[0].id})[0]
    assert top[0].id not in {h.id for h in rest}
    np.testing.assert_allclose([h.score for h in rest[:2]], [h.score for h in top[1:]])


def test_follows_adds_updates_deactivations_and_deletes(store: Store) -> None:
    repo = _repo(store)
    repo.upsert(_catalog(30))
    index = VectorIndex(repo, dim=DIM)
    index.load()
    probe = repo.embedder.encode(["全新的婴儿推车 轻便可登机"])[0]
    assert "new-1" not in {h.id for h in index.search(probe, k=5)[0]}

    repo.upsert([item("new-1", title="全新的婴儿推车 轻便可登机", tags=["遛娃"])])
    assert index.refresh() is True and index.version == repo.version()
    assert index.search(probe, k=1)[0][0].id == "new-1"
    assert index.with_tags(["遛娃"]) == {"遛娃": ["new-1"]}

    repo.upsert([item("new-1", title="车载香薰", updated_at="2026-11-02T00:00:00Z")])
    index.refresh()
    assert index.search(probe, k=1)[0][0].id != "new-1"
    assert index.search(repo.embedder.encode(["车载香薰"])[0], k=1)[0][0].id == "new-1"

    repo.upsert([item("sku-0003", active=False, updated_at="2026-11-02T00:00:00Z")])
    repo.delete("sku-0004")
    index.refresh()
    assert len(index) == 29
    every = {h.id for h in index.search(probe, k=100)[0]}
    assert "sku-0003" not in every and "sku-0004" not in every
    assert index.refresh() is False  # nothing new


def test_ivf_above_threshold_keeps_recall_and_narrow_filters(tmp_path: Path,
                                                             open_sqlite: OpenSQLite) -> None:
    repo = _repo(open_sqlite(tmp_path / "s.db"))
    items = _catalog(2500, universal=False)
    items += [item(f"rare-{i}", title=f"稀有{i}", availability=[
        {"provider_id": "tiny", "price_cents": 1, "stock": 1}]) for i in range(4)]
    repo.upsert(items)
    exact = VectorIndex(repo, dim=DIM, exact_max=10_000)
    exact.load()
    approx = VectorIndex(repo, dim=DIM, exact_max=1000, nprobe=48)
    approx.load()
    assert exact.index_type == "exact" and approx.index_type == "ivf"
    queries = repo.embedder.encode([f"商品{i} 描述{i % 17}" for i in range(0, 2500, 50)])
    a = approx.search(queries, k=10)
    e = exact.search(queries, k=10)
    recall = np.mean([len({h.id for h in x} & {h.id for h in y}) / 10 for x, y in zip(a, e, strict=True)])
    assert recall >= 0.9
    # Only four items are sold by "tiny": the probe widens until it finds all four.
    rare = approx.search(queries[:3], k=10, provider_id="tiny")
    assert all(sorted(h.id for h in row) == [f"rare-{i}" for i in range(4)] for row in rare)


def test_compaction_folds_the_delta_into_main(tmp_path: Path, open_sqlite: OpenSQLite) -> None:
    repo = _repo(open_sqlite(tmp_path / "s.db"))
    repo.upsert(_catalog(60))
    index = VectorIndex(repo, dim=DIM, compact_min=10, compact_fraction=0.0)
    index.load()
    q = repo.embedder.encode(["商品3 型号8"])[0]
    repo.upsert([item(f"sku-{i:04d}", title=f"改名{i}", updated_at="2026-11-02T00:00:00Z")
                 for i in range(12)])
    index.refresh()
    t = index._compacting
    assert t is not None
    t.join(timeout=30)
    snap = index._snap
    assert not snap.delta_ids and not snap.dead.any() and len(index) == 60
    fresh = VectorIndex(repo, dim=DIM)
    fresh.load()
    assert [h.id for h in index.search(q, k=10)[0]] == [h.id for h in fresh.search(q, k=10)[0]]


def test_persisted_index_is_loaded_then_caught_up(tmp_path: Path, open_sqlite: OpenSQLite,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    repo = _repo(open_sqlite(tmp_path / "s.db"))
    repo.upsert(_catalog(40))
    folder = tmp_path / "index"
    VectorIndex(repo, dim=DIM, persist_dir=folder).load()
    assert (folder / "CURRENT").exists() and (folder / "catalog-40.faiss").exists()
    repo.upsert([item("late", title="后来加的")])
    caplog.set_level("INFO", logger="mingpian.index")
    again = VectorIndex(repo, dim=DIM, persist_dir=folder)
    again.load()
    assert "index loaded from" in caplog.text
    assert again.version == 41 and len(again) == 41
    assert again.search(repo.embedder.encode(["后来加的"])[0], k=1)[0][0].id == "late"

    # Another catalog (a new store has a new epoch) never serves these files.
    other = _repo(open_sqlite(tmp_path / "other.db"))
    other.upsert([item("x")])
    third = VectorIndex(other, dim=DIM, persist_dir=folder)
    third.load()
    assert len(third) == 1


class _SlowFeed:
    """The repository, with entries() held until released (a slow rebuild)."""

    def __init__(self, repo: CatalogRepo) -> None:
        self.repo = repo
        self.gate = threading.Event()
        self.entered = threading.Event()

    def version(self) -> int:
        return self.repo.version()

    def epoch(self) -> str:
        return self.repo.epoch()

    def changes_after(self, seq: int, *, limit: int = 1000) -> list[tuple[int, str]]:
        return self.repo.changes_after(seq, limit=limit)

    def entries(self, ids: Sequence[str]) -> dict[str, IndexEntry]:
        self.entered.set()
        self.gate.wait(10)
        return self.repo.entries(ids)

    def iter_entries(self) -> Iterator[IndexEntry]:
        return self.repo.iter_entries()


def test_readers_keep_the_old_snapshot_until_the_new_one_is_complete(
        tmp_path: Path, open_sqlite: OpenSQLite) -> None:
    repo = _repo(open_sqlite(tmp_path / "s.db"))
    repo.upsert(_catalog(20))
    feed = _SlowFeed(repo)
    index = VectorIndex(feed, dim=DIM)
    index.load()
    feed.gate.clear()
    new = item("new", title="全新的婴儿推车 轻便可登机", description="遛娃神器", tags=["遛娃"],
               category="母婴/出行")
    repo.upsert([new])
    writer = threading.Thread(target=index.refresh)
    writer.start()
    assert feed.entered.wait(5)
    q = repo.embedder.encode([new.embedding_text()])[0]
    # Mid-refresh: the old snapshot answers, whole.
    assert index.version == 20 and "new" not in {h.id for h in index.search(q, k=20)[0]}
    feed.gate.set()
    writer.join(5)
    assert index.version == 21 and index.search(q, k=1)[0][0].id == "new"


def test_concurrent_readers_during_updates_see_consistent_results(
        tmp_path: Path, open_sqlite: OpenSQLite) -> None:
    repo = _repo(open_sqlite(tmp_path / "s.db"))
    repo.upsert(_catalog(50))
    index = VectorIndex(repo, dim=DIM, compact_min=8, compact_fraction=0.0)
    index.load()
    q = repo.embedder.encode(["商品 型号 描述"])
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                for row in index.search(q, k=10, provider_id="sh-01"):
                    ids = [h.id for h in row]
                    assert len(ids) == len(set(ids))
                    assert all(not i.startswith("gone-") for i in ids)
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for round_ in range(30):
        repo.upsert([item(f"sku-{round_ % 50:04d}", title=f"轮{round_}",
                          updated_at=f"2026-11-02T00:00:{round_:02d}Z")])
        index.refresh()
    deadline = time.monotonic() + 10
    while index._compacting is not None and index._compacting.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join(5)
    assert not errors
    assert len(index) == 50


def test_index_behind_a_trimmed_change_log_rebuilds_instead_of_skipping(store: Store) -> None:
    # Issue 12 point 5: the purge trims the change log past every *live* reader; a process
    # whose index fell further behind (restarted from an old saved index, or its reader
    # mark expired) must not silently skip the trimmed changes.
    repo = _repo(store)
    repo.upsert(_catalog(10))
    index = VectorIndex(repo, dim=DIM)
    index.load()
    assert index.version == 10
    repo.upsert([item(f"late-{i}", title=f"后来上架的商品{i}") for i in range(5)])
    repo.changes_keep = 1
    store.trim_log(CHANGES, upto=13)  # changes 11..13 are gone
    assert index.refresh() is True
    assert len(index) == 15 and index.version == repo.version()
    probe = repo.embedder.encode(["后来上架的商品0"])[0]
    assert index.search(probe, k=1)[0][0].id == "late-0"


@pytest.mark.parametrize("exact_max", [10_000, 100])
def test_candidates_of_one_request_match_their_parts(tmp_path: Path, open_sqlite: OpenSQLite,
                                                     exact_max: int) -> None:
    """candidates() (row numbers, issue 17) gives what its parts give by id: each query's
    nearest eligible items (exclusions left out), the eligible extra ids, the tagged items; each with
    its stored vector and the tags it carries; main and delta rows alike."""
    repo = _repo(open_sqlite(tmp_path / "s.db"))
    items = _catalog(400)
    repo.upsert(items)
    index = VectorIndex(repo, dim=DIM, exact_max=exact_max, nprobe=10_000,
                        compact_min=10**6)
    index.load()
    # A delta: changed items (their main rows die) and new ones, some tagged.
    changed = [item(f"sku-{i:04d}", title=f"改版{i}", tags=["标签1"],
                    updated_at="2026-11-02T00:00:00Z") for i in range(0, 40, 4)]
    fresh = [item(f"new-{i}", title=f"新品{i} 描述{i}", tags=["标签2", "新"]) for i in range(9)]
    repo.upsert(changed + fresh)
    index.refresh()
    assert index._snap.delta_ids and index._snap.dead.any()
    assert index.index_type == ("exact" if exact_max > 1000 else "ivf")
    by_id = {it.id: it for it in items} | {it.id: it for it in changed + fresh}
    q = repo.embedder.encode(["商品7 型号10 描述3", "新品3"])
    tags = ["标签1", "标签2", "不存在"]
    for provider, kind in [(None, None), ("sh-01", None), ("bj-01", "product")]:
        ok = [i for i, it in by_id.items() if it.is_available(provider)
              and (kind is None or it.kind == kind)]
        exclude = frozenset(ok[:5])
        # Extra ids (BM25's) are filtered here: one that fails the filters, one that is
        # excluded and one the index never saw are left out.
        unfit = [i for i in by_id if i not in ok][:1]
        extra = [*ok[50:53], *unfit, ok[0], "never-indexed"]
        got = index.candidates(q, k=8, tags=tags, tag_limit=6, provider_id=provider,
                               kind=kind, exclude=exclude, extra=extra)
        assert got is not None
        near = [h.id for row in index.search(q, k=8, provider_id=provider, kind=kind,
                                             exclude=exclude) for h in row]
        tagged = [i for t in tags
                  for i in index.with_tags([t], provider_id=provider, kind=kind,
                                           limit=6)[t] if i not in exclude]
        kept = [i for i in extra if i in ok and i not in exclude]
        assert kept == ok[50:53]
        assert got.ids == list(dict.fromkeys(near + kept + tagged))
        # Ids by position (a search names only the candidates it can answer with).
        at = np.asarray([len(got) - 1, 0, len(got) // 2])
        assert got.ids_at(at) == [got.ids[int(r)] for r in at] and len(got) == len(got.ids)
        assert not set(got.ids) & exclude and set(got.ids) <= set(ok)
        # Exact search ranks every eligible row: the nearest are the brute-force best.
        x = np.vstack([repo.entries([i])[i].vector for i in got.ids])
        atol = 1e-2 if exact_max < 1000 else 1e-6  # IVF stores float16
        np.testing.assert_allclose(got.x, x, atol=atol)
        want = np.asarray([[t in by_id[i].tags for t in tags] for i in got.ids])
        assert (got.carries == want).all()
    assert index.candidates(q, k=5, kind="no-such-kind") is None
