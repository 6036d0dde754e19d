"""Catalog sync throughput with the real embedder, and a no-change re-sync.

    .venv/bin/python -m bench.bench_sync [--items 10000] [--page-size 200] [--redis-url URL]

A local HTTP server speaks the mall's paging protocol (the same fake the tests use) over
``--items`` items whose texts are all different (recombined from the demo catalog, so USE
embeds realistic product text and no embedding cache can help). Measured, in one run:

1. first sync into an empty store: every item fetched, validated, embedded, written;
2. the embedder alone on the same texts (the floor: what sync cannot beat);
3. a full no-change re-sync (``--full``): every page fetched and compared, nothing embedded;
4. an incremental re-sync (the watermark): only what changed since.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from catalog.repo import CatalogRepo
from catalog_sync.loader import demo_catalog_path
from catalog_sync.source import MallSource
from catalog_sync.sync import sync_catalog
from nlp.embed import load_embedder
from store.base import Store
from tests.catalog_sync.support import Mall, serve_mall


def mall_items(n: int, seed: int) -> list[dict[str, Any]]:
    """Return n items with distinct texts as long as the demo catalog's: a demo title with a
    model number, and another demo item's description."""
    demo = [json.loads(line) for line in demo_catalog_path().read_text(encoding="utf-8")
            .splitlines() if line.strip()]
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        a, b = demo[int(rng.integers(0, len(demo)))], demo[int(rng.integers(0, len(demo)))]
        out.append(a | {
            "id": f"m-{k:06d}", "title": f"{a['title']} 型号{k:05d}",
            "description": b["description"],
            "url": f"https://mall.example.com/p/m-{k:06d}", "active": True,
            "updated_at": f"2026-10-{1 + k % 28:02d}T08:00:00Z",
        })
    return out


def open_store(folder: Path, redis_url: str | None) -> Store:
    if redis_url:
        from store.redis import RedisStore

        st = RedisStore(redis_url)
        st.r.flushdb()
        return st
    from store.sqlite import SQLiteStore

    return SQLiteStore(folder / "sync.db")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--page-size", type=int, default=200)
    p.add_argument("--embedder", default="use")
    p.add_argument("--threads", type=int, default=1,
                   help="embedder threads, as `mingpian sync --threads` (1)")
    p.add_argument("--redis-url", help="measure on this Redis (it is FLUSHED) instead of SQLite")
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args()
    items = mall_items(args.items, args.seed)
    print(f"# {args.items} items, page size {args.page_size}, embedder {args.embedder} "
          f"({args.threads} thread{'s' if args.threads > 1 else ''}), "
          f"{'redis' if args.redis_url else 'sqlite'}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp, serve_mall(Mall()) as mall:
        mall.put(*items)
        store = open_store(Path(tmp), args.redis_url)
        emb = load_embedder(args.embedder, threads=args.threads)
        emb.encode(["预热"])  # load the model outside the timings
        repo = CatalogRepo(store, embedder=emb)

        def run(**kw: Any) -> Any:
            src = MallSource(mall.url)
            try:
                return sync_catalog(repo, src, page_size=args.page_size, progress=False, **kw)
            finally:
                src.close()

        chars = np.mean([len(repo_item_text(d)) for d in items])
        print(f"embedding text: {chars:.0f} characters an item on average")
        first = run()
        assert first.complete and first.stats.embedded == args.items
        print(f"first sync:        {first.fetched} items, {first.stats.embedded} embedded, "
              f"{first.elapsed_s:6.1f} s = {first.items_per_s:6.0f} items/s")

        floor_emb = load_embedder(args.embedder, threads=args.threads)  # a fresh cache
        texts = [repo_item_text(d) for d in items]
        t = time.perf_counter()
        for s in range(0, len(texts), 256):
            floor_emb.encode(texts[s : s + 256])
        floor_s = time.perf_counter() - t
        print(f"floor: embedder alone on the same texts: {floor_s:6.1f} s = "
              f"{len(texts) / floor_s:6.0f} items/s  (sync reaches "
              f"{first.items_per_s / (len(texts) / floor_s):.0%} of it)")

        mall.requests.clear()
        full = run(full=True)
        assert full.stats.unchanged == args.items and full.stats.embedded == 0
        print(f"no-change re-sync (--full): {full.fetched} items in {len(mall.requests)} pages, "
              f"0 embedded, {full.elapsed_s:5.2f} s = {full.items_per_s:6.0f} items/s")

        changed = items[:50]
        mall.put(*[d | {"title": d["title"] + " 新版", "updated_at": "2026-11-20T00:00:00Z"}
                   for d in changed])
        inc = run()
        print(f"incremental re-sync: {inc.fetched} items fetched ({inc.stats.updated} changed, "
              f"{inc.stats.embedded} embedded) in {inc.elapsed_s:5.2f} s")
        store.close()


def repo_item_text(doc: dict[str, Any]) -> str:
    """Return the embedding text of a raw item, as the repository computes it."""
    from models.catalog import CatalogItem

    return CatalogItem.model_validate(doc).embedding_text()


if __name__ == "__main__":
    main()
