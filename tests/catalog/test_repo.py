"""The catalog in the store: diff on upsert, re-embedding only changed texts, the change log,
and the typed reads the card pages use."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from catalog.repo import CatalogRepo
from catalog_sync.loader import import_items
from store.base import Record, Store
from tests.catalog_sync.support import CountingEmbedder, item, item_json

Read = Callable[[CatalogRepo, Sequence[str]], dict[str, Any]]


def test_upsert_creates_then_skips_unchanged(store: Store) -> None:
    emb = CountingEmbedder()
    repo = CatalogRepo(store, embedder=emb)
    first = repo.upsert([item("a"), item("b")])
    assert (first.created, first.embedded) == (2, 2)
    assert repo.version() == 2 and repo.count() == 2
    again = repo.upsert([item("a"), item("b")])
    assert (again.unchanged, again.embedded, again.changed_ids) == (2, 0, [])
    assert repo.version() == 2  # nothing logged for a no-op
    got = repo.get("a")
    assert got is not None and got.to_json() == item_json("a")


def test_only_changed_text_is_embedded_again(store: Store) -> None:
    emb = CountingEmbedder()
    repo = CatalogRepo(store, embedder=emb)
    repo.upsert([item("a"), item("b"), item("c")])
    emb.texts.clear()
    stats = repo.upsert([
        item("a", price_cents=1, updated_at="2026-11-02T00:00:00Z"),  # price only
        item("b", title="新名字", updated_at="2026-11-02T00:00:00Z"),  # text changed
        item("c"),  # unchanged
    ])
    assert (stats.updated, stats.unchanged, stats.embedded) == (2, 1, 1)
    assert len(emb.texts) == 1 and "新名字" in emb.texts[0]
    assert sorted(stats.changed_ids) == ["a", "b"]
    entries = repo.entries(["a", "b", "c"])
    assert set(entries) == {"a", "b", "c"}
    assert entries["a"].item.price_cents == 1
    np.testing.assert_allclose(entries["b"].vector, emb.inner.encode([item("b", title="新名字").embedding_text()])[0])


def test_older_update_is_ignored_as_stale(store: Store) -> None:
    repo = CatalogRepo(store, embedder=CountingEmbedder())
    repo.upsert([item("a", price_cents=200, updated_at="2026-11-02T00:00:00Z")])
    stats = repo.upsert([item("a", price_cents=100, updated_at="2026-11-01T00:00:00.5Z")])
    assert stats.stale == 1
    got = repo.get("a")
    assert got is not None and got.price_cents == 200


def test_delete_logs_a_change_and_drops_the_vector(store: Store) -> None:
    repo = CatalogRepo(store, embedder=CountingEmbedder())
    repo.upsert([item("a"), item("b")])
    assert repo.delete("a") is True
    assert repo.delete("a") is False
    assert repo.get("a") is None and repo.entries(["a"]) == {}
    assert [i for _, i in repo.changes_after(0)] == ["a", "b", "a"]
    assert [i for _, i in repo.changes_after(2)] == ["a"]


def test_vectors_of_another_embedder_are_not_served(store: Store) -> None:
    CatalogRepo(store, embedder=CountingEmbedder(64)).upsert([item("a")])
    other = CatalogRepo(store, embedder=CountingEmbedder(32))
    assert other.entries(["a"]) == {}  # re-import with the new model re-embeds it
    stats = other.upsert([item("a")])
    assert stats.embedded == 1 and other.entries(["a"])["a"].vector.shape == (32,)


def test_batch_reports_invalid_items_by_index_and_keeps_the_rest(store: Store) -> None:
    repo = CatalogRepo(store, embedder=CountingEmbedder())
    report = import_items(repo, [item_json("a"), {"id": "b", "kind": "product"},
                                 "not an object", item_json("c", price_cents=-3), item_json("d")])
    assert [e.index for e in report.errors] == [1, 2, 3]
    assert report.errors[0].id == "b" and report.errors[2].message.startswith("price_cents")
    assert {i.id for i in repo.iter_items()} == {"a", "d"}


def test_epoch_is_stable(store: Store) -> None:
    repo = CatalogRepo(store, embedder=CountingEmbedder())
    assert repo.epoch() == repo.epoch() == CatalogRepo(store, embedder=CountingEmbedder()).epoch()


def test_apply_rediffs_when_the_item_changed_after_prepare(store: Store) -> None:
    emb = CountingEmbedder()
    repo = CatalogRepo(store, embedder=emb)
    repo.upsert([item("a")])
    prepared = repo.prepare([item("a", title="甲", updated_at="2026-11-03T00:00:00Z")])
    repo.upsert([item("a", title="乙", updated_at="2026-11-02T00:00:00Z")])  # lands first
    stats = repo.apply(prepared[0])
    assert stats.updated == 1
    got = repo.get("a")
    assert got is not None and got.title == "甲"
    assert len(repo.entries(["a"])) == 1  # its vector matches its text


def test_typed_reads_skip_inactive_and_out_of_stock_items(store: Store) -> None:
    repo = CatalogRepo(store, embedder=CountingEmbedder())
    sh = [{"provider_id": "sh-01", "price_cents": 8800, "stock": 3}]
    sold_out = [{"provider_id": "sh-01", "price_cents": 8800, "stock": 0}]
    repo.upsert([item("a"), item("b", active=False), item("c", availability=sh),
                 item("d", availability=sold_out)])
    got = repo.get_active("a")
    assert got is not None and got.url == "https://mall.example.com/p/a"
    assert repo.get_active("b") is None and repo.get_active("nope") is None
    assert set(repo.get_items(["a", "b", "nope"])) == {"a", "b"}
    assert [i.id for i in repo.list_available(provider_id=None, limit=10)] == ["a", "c", "d"]
    assert [i.id for i in repo.list_available(provider_id="sh-01", limit=10)] == ["a", "c"]
    assert [i.id for i in repo.list_available(provider_id="sh-01", limit=1)] == ["a"]
    assert repo.list_available(provider_id=None, limit=10, scan=1) == [repo.get("a")]


# Both caches: the items (card pages, feedback) and their listings (the recommender's
# final check on every page view).
READS = {"items": CatalogRepo.get_items, "listings": CatalogRepo.get_listings}


@pytest.mark.parametrize("read", READS.values(), ids=list(READS))
def test_item_cache_follows_every_change_written_elsewhere(store: Store, read: Read) -> None:
    """Issue 17: the recommender's final check reads items from a cache that one read of the
    change log's length validates; a change through another repository (another process)
    drops exactly the changed items."""
    reader = CatalogRepo(store, embedder=CountingEmbedder())
    writer = CatalogRepo(store, embedder=CountingEmbedder())
    writer.upsert([item("a"), item("b"), item("c")])
    first = read(reader, ["a", "b", "c"])
    assert read(reader, ["a", "c"])["a"] is first["a"]  # served from the cache
    writer.upsert([item("a", price_cents=1, updated_at="2026-11-02T00:00:00Z")])
    assert writer.delete("b")
    now = read(reader, ["a", "b", "c"])
    assert now["a"].price_cents == 1 and "b" not in now
    assert now["c"] is first["c"]  # unchanged: still cached
    writer.upsert([item("b", title="回来了")])
    assert read(reader, ["b"])["b"].title == "回来了"


@pytest.mark.parametrize("read", READS.values(), ids=list(READS))
def test_item_cache_starts_over_when_far_behind_or_trimmed(
        store: Store, monkeypatch: pytest.MonkeyPatch, read: Read) -> None:
    import catalog.repo

    reader = CatalogRepo(store, embedder=CountingEmbedder())
    writer = CatalogRepo(store, embedder=CountingEmbedder())
    writer.upsert([item("a"), item("b"), item("c")])
    first = read(reader, ["a", "b", "c"])
    monkeypatch.setattr(catalog.repo, "_CACHE_CATCH_UP", 2)
    for n in range(3):  # more changes than the cache catches up on
        writer.upsert([item("a", price_cents=10 + n, updated_at=f"2026-11-0{n + 2}T00:00:00Z")])
    now = read(reader, ["a", "c"])
    assert now["a"].price_cents == 12 and now["c"] is not first["c"]
    # The log trimmed past the cache's version: the reader cannot tell what changed.
    writer.changes_keep = 1
    writer.upsert([item("c", title="新", updated_at="2026-11-09T00:00:00Z")])
    writer.upsert([item("b", title="也新", updated_at="2026-11-09T00:00:00Z")])
    assert writer.trim_changes() > 0
    now = read(reader, ["a", "b", "c"])
    assert (now["b"].title, now["c"].title) == ("也新", "新")


@pytest.mark.parametrize("read", READS.values(), ids=list(READS))
def test_item_cache_keeps_no_read_that_a_change_overtook(
        store: Store, monkeypatch: pytest.MonkeyPatch, read: Read) -> None:
    """A request reads the version, misses, and reads the item; meanwhile the item changes
    and another request moves the cache past that change. The first request's copy (read
    before the change) must not be kept: the cache already dropped that item once."""
    reader = CatalogRepo(store, embedder=CountingEmbedder())
    writer = CatalogRepo(store, embedder=CountingEmbedder())
    writer.upsert([item("a", title="旧"), item("b")])
    read(reader, ["b"])  # the cache is at the current version
    real_get_many = store.get_many
    overtaken = False

    def get_many(ns: str, keys: Sequence[str]) -> dict[str, Record]:
        nonlocal overtaken
        got = real_get_many(ns, keys)  # the old copy of "a"
        if not overtaken:
            overtaken = True
            writer.upsert([item("a", title="新", updated_at="2026-11-02T00:00:00Z")])
            read(reader, ["b"])  # another request: the cache moves to the new version
        return got

    monkeypatch.setattr(store, "get_many", get_many)
    assert read(reader, ["a"])["a"].title == "旧"  # what that request read: the old copy
    assert read(reader, ["a"])["a"].title == "新"  # but the cache did not keep it
