"""The catalog, its vector index and the recommender for one process (only app/ reads
settings)."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from app.settings import Settings
from catalog.repo import CatalogRepo
from catalog_sync.loader import ImportReport, import_items
from models.errors import NotFoundError
from nlp.embed import CachedEmbedder, Embedder, load_embedder
from nlp.index import VectorIndex
from nlp.lexical import LexicalIndex
from nlp.recommend import ProfileSource, Recommender, TagSpace
from nlp.signals import Signals
from nlp.taxonomy import Taxonomy
from store import Store

log = logging.getLogger("mingpian.catalog")

SWITCH_INTERVAL_S = 0.0005  # sys.setswitchinterval of a serving process (tune_for_serving)

_lock = threading.Lock()
_embedders: dict[tuple[str, int | None], CachedEmbedder] = {}
_tag_spaces: dict[tuple[int, tuple[tuple[str, tuple[str, ...]], ...]], TagSpace] = {}


def shared_embedder(spec: str, *, threads: int | None = None) -> CachedEmbedder:
    """Return this process's embedder for a setting, loading it on first use.

    One model per process, whatever number of apps a test session builds: loading USE and
    embedding the taxonomy's example sentences takes about two seconds.
    """
    with _lock:
        emb = _embedders.get((spec, threads))
        if emb is None:
            emb = _embedders[(spec, threads)] = load_embedder(spec, threads=threads)
        return emb


def shared_tag_space(embedder: Embedder, taxonomy: Taxonomy) -> TagSpace:
    """Return the tag vectors of a taxonomy for this embedder (computed once per embedder
    and taxonomy content)."""
    prototypes = taxonomy.prototypes()
    key = (id(embedder), tuple((tag, tuple(texts)) for tag, texts in prototypes.items()))
    with _lock:
        space = _tag_spaces.get(key)
        if space is None:
            space = _tag_spaces[key] = TagSpace(embedder, prototypes)
        return space


class CatalogService:
    """Writes to the catalog that this process's index sees at once (the catalog webhooks).

    Other processes see a write within their index's poll interval."""

    def __init__(self, repo: CatalogRepo, index: VectorIndex, *,
                 loader: Callable[[CatalogRepo, Sequence[object]], ImportReport] = import_items
                 ) -> None:
        self.repo = repo
        self.index = index
        self.loader = loader

    def upsert(self, raws: Sequence[object]) -> ImportReport:
        """Validate and upsert items (invalid ones reported by position); refresh the index
        when any item changed."""
        report = self.loader(self.repo, raws)
        if report.stats.changed_ids:
            self.index.refresh()
        return report

    def item_json(self, item_id: str) -> dict[str, Any]:
        """Return one item as stored, or raise NotFoundError."""
        item = self.repo.get(item_id)
        if item is None:
            raise NotFoundError(f"no catalog item {item_id!r}")
        return item.to_json()

    def delete(self, item_id: str) -> None:
        """Remove an item from the catalog and the index, or raise NotFoundError."""
        if not self.repo.delete(item_id):
            raise NotFoundError(f"no catalog item {item_id!r}")
        self.index.refresh()


@dataclass
class CatalogKit:
    """The catalog repository, the index following it and the recommender over both."""

    embedder: Embedder
    repo: CatalogRepo
    index: VectorIndex
    recommender: Recommender
    service: CatalogService  # catalog writes that refresh the index

    def close(self) -> None:
        """Stop following the catalog."""
        self.index.close()
        if self.recommender.lexical is not None:
            self.recommender.lexical.close()


def build_catalog(settings: Settings, store: Store, *, taxonomy: Taxonomy,
                  embedder: Embedder | None = None, profiles: ProfileSource | None = None,
                  follow: bool = True) -> CatalogKit:
    """Load (or build) the index and start following the catalog's change log; the
    recommender matches tags of ``taxonomy`` (the tagger's, app/nlp_wiring.load_taxonomy)."""
    emb = embedder or shared_embedder(settings.embedder, threads=settings.embedder_threads)
    # Item texts are embedded once each (unchanged items are skipped by content hash): past
    # the query cache, which 100k items would otherwise fill with vectors never asked again.
    repo = CatalogRepo(store, embedder=emb.inner if isinstance(emb, CachedEmbedder) else emb)
    persist = settings.data_dir / "index" if store.backend == "sqlite" else None
    index = VectorIndex(repo, dim=emb.dim, exact_max=settings.exact_index_max,
                        nprobe=settings.index_nprobe, persist_dir=persist,
                        mmap=settings.index_mmap)
    index.load()
    if follow:
        index.start(poll_s=settings.index_poll_s)
    # A consumable bought comes back after its catalog repurchase interval (issue 15).
    signals = Signals(store, repurchase_days=lambda ids: {
        i: it.repurchase_days for i, it in repo.get_items(ids).items() if it.repurchase_days})
    rec = Recommender(index=index, items=repo, embedder=emb, signals=signals,
                      tags=shared_tag_space(emb, taxonomy), profiles=profiles,
                      empty_when_unsure=settings.recommend_empty_when_unsure,
                      ranked_texts=settings.recommend_search_cache)
    if rec.lexical_weight or rec.coverage_weight:
        # Hybrid retrieval (issue 16): only when the embedder's relevance model gives BM25
        # a weight (for "use" it earned none on the labelled set: no index, no cost).
        rec.lexical = LexicalIndex(repo, terms=taxonomy.terms())
        if follow:
            rec.lexical.start(poll_s=settings.index_poll_s)
        else:
            rec.lexical.load()
    log.info("catalog index: %d items (%s), version %d", len(index), index.index_type,
             index.version)
    return CatalogKit(embedder=emb, repo=repo, index=index, recommender=rec,
                      service=CatalogService(repo, index))


def tune_for_serving(app: FastAPI) -> FastAPI:
    """Return app set up for a long-running `serve` process (never for tests).

    - One BLAS thread: requests already run in parallel threads, and OpenBLAS called from
      many threads at once collapses (57 req/s at 16 connections instead of 260, measured).
    - After start-up, everything built so far (index metadata, models, schemas) is frozen
      out of the garbage collector: otherwise each full collection walks it and a page
      view now and then waits 20–100 ms (p99 101 ms → 8 ms at 100k items, measured).
    - A GIL switch interval of 0.5 ms instead of 5: a thread that wakes up (the event loop
      with a callback to answer, the group commit's writer) waits up to a whole interval
      for a thread running Python (the embedded consumer, a recommendation) to hand the
      GIL over. A thread waking from a 1 ms sleep beside a busy one: p50 5.4 ms at 5 ms,
      0.66 ms at 0.5 ms (issue 17, BENCHMARKS.md).
    """
    import sys

    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            gc.collect()
            gc.freeze()
            yield state

    app.router.lifespan_context = lifespan
    return app
