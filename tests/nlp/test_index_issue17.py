"""Issue 17, memory: the IVF index holds each vector once (float16 lists, read back by id),
a persisted index is mapped rather than read, and compaction over a mapped index works.
Also the query cache's normalised keys."""

from __future__ import annotations

import threading
from pathlib import Path

import faiss
import numpy as np
import pytest

from catalog.repo import CatalogRepo
from models.catalog import CatalogItem
from nlp.embed import CachedEmbedder, HashEmbedder
from nlp.index import VectorIndex
from tests.catalog_sync.support import CountingEmbedder, item
from tests.conftest import OpenSQLite

DIM = 64


def _items(n: int, prefix: str = "sku") -> list[CatalogItem]:
    return [item(f"{prefix}-{i:05d}", title=f"{prefix}商品{i} 型号{i * 7 % 13}",
                 description=f"描述{i % 17} 功能{i % 5}", tags=[f"标签{i % 7}"])
            for i in range(n)]


def _stored(repo: CatalogRepo, ids: list[str]) -> np.ndarray:
    entries = repo.entries(ids)
    return np.vstack([entries[i].vector for i in ids])


def test_point_memory_ivf_holds_each_vector_once(tmp_path: Path,
                                                 open_sqlite: OpenSQLite) -> None:
    repo = CatalogRepo(open_sqlite(tmp_path / "s.db"), embedder=CountingEmbedder(DIM))
    repo.upsert(_items(2500))
    index = VectorIndex(repo, dim=DIM, exact_max=1000, nprobe=48)
    index.load()
    snap = index._snap
    assert index.index_type == "ivf"
    # The lists are the only copy, in float16; the snapshot keeps no float32 array beside them.
    assert isinstance(snap.main, faiss.IndexIVFScalarQuantizer)
    assert snap.x.size == 0
    ids = [f"sku-{i:05d}" for i in (0, 7, 1234, 2499)]
    got = index.vectors(ids)
    want = _stored(repo, ids)
    assert np.allclose(np.vstack([got[i] for i in ids]), want, atol=2e-3)
    # Each item finds itself first through the float16 lists.
    hits = index.search(want, k=1)
    assert [row[0].id for row in hits] == ids


def test_point_concurrency_a_request_thread_searches_with_one_omp_thread(
        tmp_path: Path, open_sqlite: OpenSQLite) -> None:
    """OpenMP keeps its thread count per calling thread: the count set when the index was
    built did not reach the server's request threads, whose searches woke every core."""
    repo = CatalogRepo(open_sqlite(tmp_path / "s.db"), embedder=CountingEmbedder(DIM))
    repo.upsert(_items(1500))
    index = VectorIndex(repo, dim=DIM, exact_max=1000, threads=1)
    index.load()
    assert index.index_type == "ivf"
    seen: list[int] = []

    def request() -> None:
        seen.append(faiss.omp_get_max_threads())  # a new thread starts with the default
        index.search(_stored(repo, ["sku-00001"]), k=3)
        seen.append(faiss.omp_get_max_threads())

    worker = threading.Thread(target=request)
    worker.start()
    worker.join()
    assert seen[1] == 1, f"a request thread searched with {seen[1]} OpenMP threads"


@pytest.mark.parametrize("mapped", [True, False])
def test_point_memory_persisted_ivf_is_mapped_and_compacts(tmp_path: Path,
                                                           open_sqlite: OpenSQLite,
                                                           mapped: bool) -> None:
    store = open_sqlite(tmp_path / "s.db")
    repo = CatalogRepo(store, embedder=CountingEmbedder(DIM))
    repo.upsert(_items(2500))
    first = VectorIndex(repo, dim=DIM, exact_max=1000, persist_dir=tmp_path / "index")
    first.load()
    first.close()
    # A second process (serve's consumer, serve --workers 2) maps the file its peer wrote
    # (the default); mmap=False reads it.
    index = VectorIndex(repo, dim=DIM, exact_max=1000, persist_dir=tmp_path / "index",
                        compact_min=10, compact_fraction=0.0, mmap=mapped)
    index.load()
    main = index._snap.main
    assert isinstance(main, faiss.IndexIVF)
    assert main.invlists is not None
    lists = faiss.downcast_InvertedLists(main.invlists)
    if mapped:
        assert isinstance(lists, faiss.OnDiskInvertedLists)
        # faiss's default, 32 prefetch threads started on every search, made a mapped
        # search cost 5-10x the CPU of one in memory.
        assert lists.prefetch_nthread == 0
    else:
        assert isinstance(lists, faiss.ArrayInvertedLists)
    # Changes land in the delta, then compaction rebuilds main from the mapped lists.
    repo.upsert(_items(30, prefix="new"))
    repo.upsert([item("sku-00003", title="改名", updated_at="2026-11-02T00:00:00Z")])
    assert index.refresh()
    t = index._compacting
    assert t is not None
    t.join(timeout=60)
    snap = index._snap
    assert not snap.delta_ids and not snap.dead.any() and len(index) == 2530
    assert snap.x.size == 0
    ids = ["sku-00003", "sku-01000", "new-00029"]
    got = index.vectors(ids)
    assert np.allclose(np.vstack([got[i] for i in ids]), _stored(repo, ids), atol=2e-3)
    assert [row[0].id for row in index.search(_stored(repo, ids), k=1)] == ids
    index.close()


def test_point_recommend_query_cache_keys_by_normalised_text() -> None:
    emb = CachedEmbedder(HashEmbedder(32))
    a = emb.encode(["防晒 推荐"])
    b = emb.encode(["  防晒   推荐\n"])
    assert emb.misses == 1 and emb.hits == 1
    assert np.array_equal(a, b)
