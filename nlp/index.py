"""A faiss index over catalog item embeddings that follows the catalog's change log.

Readers take an immutable :class:`_Snapshot` by reference; writers build a new snapshot and
swap the reference, so a search never sees a half-built index. A snapshot is a *main* faiss
index (exact ``IndexFlatIP`` up to ``exact_max`` rows, IVF above) plus a small *delta* of
items changed since main was built, searched by brute force, and tombstones for main rows
that were removed or superseded. When the delta grows, main is rebuilt in a background
thread (compaction) and, in embedded mode, persisted under ``persist_dir``.

Each main row's vector is held once (issue 17): by the exact index (and read back as a view
of faiss's own storage), or by the IVF lists, as float16 (``IndexIVFScalarQuantizer``,
``QT_fp16``: half the memory of float32, recall@10 unchanged at the printed figure) and read
back by id through the index's direct map. A persisted index is opened with ``IO_FLAG_MMAP``
(``mmap``, the default setting) so that every process on the machine shares its pages, with
faiss's per-search prefetch threads turned off (:func:`_no_prefetch`: they made a mapped
search cost 5–10× the CPU of one in memory); ``mmap=False`` reads it into memory.

A request's candidates (:meth:`VectorIndex.candidates`) are gathered from one snapshot as
row numbers ("refs": main rows, then delta rows after them): the nearest rows, the tagged
rows, their vectors and tag marks, with ids looked up once for the answer (issue 17).

The catalog itself (items, vectors, a change log whose length is the version) is read
through :class:`catalog.feed.CatalogFeed`, so every process of a Redis deployment converges on the same
version by polling it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np
import numpy.typing as npt

from catalog.feed import CatalogFeed, IndexEntry
from models.catalog import KINDS, CatalogItem
from nlp.poller import Poller

log = logging.getLogger("mingpian.index")

_MASKS_KEPT = 256  # filter / tag masks cached per snapshot; past this the cache starts over

Vectors = npt.NDArray[np.float32]
Rows = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

_KIND_CODE: dict[str, int] = {k: i for i, k in enumerate(KINDS)}
_BY_RESIDUAL = False  # IVF lists store rows themselves, not rows minus their centroid
# faiss builds its Python classes with SWIG: keyword constructors and some methods are
# invisible to mypy, so those few calls go through an untyped handle.
_F: Any = faiss


@dataclass(frozen=True)
class Hit:
    """One search result: an item id and its inner product with the query."""

    id: str
    score: float


# -- per-row metadata -------------------------------------------------------------------
@dataclass(frozen=True)
class _Meta:
    """Filter metadata of a set of rows: kind, availability per provider, tags."""

    ids: list[str]
    kind: npt.NDArray[np.int8]
    universal: Mask  # empty availability: every provider sells it
    offers: dict[str, Rows]  # provider → rows listed there with stock > 0
    tags: dict[str, Rows]  # tag → rows carrying it

    @staticmethod
    def of(items: Sequence[CatalogItem]) -> _Meta:
        offers: dict[str, list[int]] = {}
        tags: dict[str, list[int]] = {}
        for row, it in enumerate(items):
            for a in it.availability:
                if a.stock > 0:
                    offers.setdefault(a.provider_id, []).append(row)
            for t in it.tags:
                tags.setdefault(t, []).append(row)
        return _Meta(
            ids=[it.id for it in items],
            kind=np.fromiter((_KIND_CODE[it.kind] for it in items), dtype=np.int8,
                             count=len(items)),
            universal=np.fromiter((not it.availability for it in items), dtype=np.bool_,
                                  count=len(items)),
            offers={p: np.asarray(r, dtype=np.int64) for p, r in offers.items()},
            tags={t: np.asarray(r, dtype=np.int64) for t, r in tags.items()},
        )

    def mask(self, *, provider_id: str | None, kind: str | None) -> Mask:
        """Return which rows pass the kind and provider filters."""
        m = np.ones(len(self.ids), dtype=np.bool_)
        if kind is not None:
            m &= self.kind == _KIND_CODE.get(kind, -1)
        if provider_id is not None:
            offered = self.universal.copy()
            rows = self.offers.get(provider_id)
            if rows is not None:
                offered[rows] = True
            m &= offered
        return m


# -- building main indexes --------------------------------------------------------------
def ivf_nlist(n: int) -> int:
    """Return the number of IVF lists for n rows: about 4·√n, and at least 39 rows a list
    (faiss's k-means wants that many training points per centroid)."""
    return max(1, min(65_536, int(4 * math.sqrt(max(n, 1))), n // 39))


def train_ivf(x: Vectors, *, nlist: int, seed: int = 1234, per_list: int = 48,
              niter: int = 15) -> faiss.Index:
    """Return an empty, trained IVF index (inner product, float16 lists) whose lists suit x.

    k-means runs on at most per_list·nlist rows for niter rounds: at 1M rows that is a
    minute on two cores instead of several, for centroids just as good for routing.
    """
    return train_ivf_sample(lambda rows: x[rows], n=len(x), dim=x.shape[1], nlist=nlist,
                            seed=seed, per_list=per_list, niter=niter)


def train_ivf_sample(take: Callable[[Rows], Vectors], *, n: int, dim: int, nlist: int,
                     seed: int = 1234, per_list: int = 48, niter: int = 15) -> faiss.Index:
    """Return an empty IVF index trained on a sample of n rows read through take(rows)."""
    quantizer = faiss.IndexFlatIP(dim)
    # float16 lists: half of IndexIVFFlat's memory, inner products within ~1e-3 (recall@10
    # is printed by bench/bench_issue17.py). No residuals: a row decodes to itself.
    ivf = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16,
                                        faiss.METRIC_INNER_PRODUCT, _BY_RESIDUAL)
    ivf.cp.spherical = True  # centroids on the unit sphere: right for cosine data
    ivf.cp.seed = seed
    ivf.cp.niter = niter
    rows = np.arange(n, dtype=np.int64)
    cap = per_list * nlist
    if n > cap:
        rows = np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))
    ivf.train(np.ascontiguousarray(take(rows), dtype=np.float32))
    return ivf


def build_main(x: Vectors, *, exact_max: int, trained: faiss.Index | None = None
               ) -> tuple[faiss.Index | None, Vectors]:
    """Return (faiss index over rows 0..n-1, the rows' vectors) — exact up to exact_max.

    For the exact index the returned vectors are a view into faiss's own storage (no copy);
    for IVF they are empty: the lists hold the only copy (read back with main_vectors).
    ``trained`` is an empty trained IVF to reuse (compaction keeps the lists it trained).
    """
    n = len(x)
    return build_main_from(lambda a, b: x[a:b], lambda rows: x[rows], n=n, dim=x.shape[1],
                           exact_max=exact_max, trained=trained)


_ADD_CHUNK = 8192  # rows added to a new main index at a time: a bounded transient copy


def build_main_from(
        read: Callable[[int, int], Vectors], take: Callable[[Rows], Vectors], *, n: int,
        dim: int, exact_max: int, trained: faiss.Index | None = None
) -> tuple[faiss.Index | None, Vectors]:
    """build_main over rows read in chunks: read(a, b) returns rows a..b-1 and take(rows)
    any rows (the IVF training sample), so no second copy of every vector is ever made."""
    empty = np.zeros((0, dim), dtype=np.float32)
    if n == 0:
        return None, empty
    if n <= exact_max:
        main: faiss.Index = faiss.IndexFlatIP(dim)
    else:
        main = (faiss.clone_index(trained) if trained is not None
                else train_ivf_sample(take, n=n, dim=dim, nlist=ivf_nlist(n)))
    for a in range(0, n, _ADD_CHUNK):
        main.add(np.ascontiguousarray(read(a, min(n, a + _ADD_CHUNK)), dtype=np.float32))
    return main, _own_vectors(main, n=n, dim=dim)


def _own_vectors(main: faiss.Index | None, *, n: int, dim: int) -> Vectors:
    """Return the exact index's rows as a view of its storage; for IVF, make the direct map
    (row → list position) that main_vectors reads through, and return no rows."""
    if main is None:
        return np.zeros((0, dim), dtype=np.float32)
    if isinstance(main, faiss.IndexIVF):
        main.make_direct_map()
        return np.zeros((0, dim), dtype=np.float32)
    flat: Any = main
    return faiss.rev_swig_ptr(flat.get_xb(), n * dim).reshape(n, dim)


def main_vectors(main: faiss.Index | None, x: Vectors, rows: Rows) -> Vectors:
    """Return main's vectors of these rows: from x (exact) or decoded from the IVF lists."""
    if main is None or not isinstance(main, faiss.IndexIVF) or len(rows) == 0:
        return np.asarray(x[rows], dtype=np.float32)
    # reconstruct_batch decodes only these rows; the typed stub hides the SWIG signature.
    handle: Any = main
    out: Vectors = handle.reconstruct_batch(np.ascontiguousarray(rows, dtype=np.int64))
    return out


def _empty_trained(index: faiss.Index | None) -> faiss.Index | None:
    """Return an empty IVF index with index's trained lists (None: index is not IVF)."""
    if index is None or not isinstance(index, faiss.IndexIVF):
        return None
    # New float16 lists around a copy of the trained quantizer: cloning index would copy
    # every list first (and lists read with IO_FLAG_MMAP cannot be cloned at all).
    handle: Any = index
    quantizer: Any = faiss.clone_index(handle.quantizer)
    ivf: Any = faiss.IndexIVFScalarQuantizer(quantizer, index.d, handle.nlist,
                                             faiss.ScalarQuantizer.QT_fp16,
                                             faiss.METRIC_INNER_PRODUCT, _BY_RESIDUAL)
    ivf.own_fields = True
    quantizer.this.disown()  # the IVF index owns (and frees) its quantizer now
    ivf.is_trained = True
    out: faiss.Index = ivf
    return out


# -- snapshots --------------------------------------------------------------------------
@dataclass
class _Snapshot:
    """One consistent state of the index; never mutated once published (masks are a cache)."""

    version: int
    epoch: str
    dim: int
    main: faiss.Index | None
    x: Vectors  # main rows' vectors when exact (a view of faiss's storage); IVF: none
    meta: _Meta
    row_of: dict[str, int]
    dead: Mask  # main rows removed or superseded by the delta
    delta_items: list[CatalogItem] = field(default_factory=list)
    delta_x: Vectors = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    delta_meta: _Meta = field(default_factory=lambda: _Meta.of([]))
    delta_of: dict[str, int] = field(default_factory=dict)
    trained: faiss.Index | None = None  # empty trained IVF lists, reused by compaction
    trained_n: int = 0  # rows the lists were trained for
    masks: dict[tuple[str | None, str | None], tuple[Mask, Any, int]] = field(
        default_factory=dict)
    tag_masks: dict[str, Mask] = field(default_factory=dict)

    @property
    def delta_ids(self) -> list[str]:
        return self.delta_meta.ids

    @property
    def size(self) -> int:
        return int(len(self.meta.ids) - int(self.dead.sum())) + len(self.delta_ids)

    def main_mask(self, provider_id: str | None, kind: str | None) -> tuple[Mask, Any, int]:
        """Return (eligible main rows, faiss bitmap selector or None, count), cached."""
        key = (provider_id, kind)
        got = self.masks.get(key)
        if got is not None:
            return got
        m = self.meta.mask(provider_id=provider_id, kind=kind) & ~self.dead
        count = int(m.sum())
        sel: Any = None
        if count < len(m):
            bits = np.packbits(m, bitorder="little")
            sel = (faiss.IDSelectorBitmap(len(m), faiss.swig_ptr(bits)), bits)
        if len(self.masks) > _MASKS_KEPT:
            self.masks.clear()
        self.masks[key] = (m, sel, count)
        return m, sel, count

    def main_tag_mask(self, tag: str) -> Mask | None:
        """Return which main rows carry the tag (None: none do), cached."""
        got = self.tag_masks.get(tag)
        if got is None:
            rows = self.meta.tags.get(tag)
            if rows is None:
                return None
            got = np.zeros(len(self.meta.ids), dtype=np.bool_)
            got[rows] = True
            if len(self.tag_masks) > _MASKS_KEPT:
                self.tag_masks.clear()
            self.tag_masks[tag] = got
        return got


# -- refs: a snapshot's rows, main and delta, as one range of numbers -------------------------
@dataclass(frozen=True)
class Candidates:
    """One request's candidate items: their refs in one snapshot, vectors (one row each)
    and, per asked tag, whether each item carries it. Ids are looked up when asked: a
    search has hundreds of candidates and answers with a few dozen (issue 17)."""

    refs: Rows
    x: Vectors
    carries: Mask  # (len(refs), len(tags))
    snap: _Snapshot = field(repr=False)

    def __len__(self) -> int:
        return len(self.refs)

    @cached_property
    def ids(self) -> list[str]:
        """Every candidate's id, in order."""
        return _ids_of(self.snap, self.refs)

    def ids_at(self, rows: Rows) -> list[str]:
        """The ids of the candidates at these positions."""
        return _ids_of(self.snap, self.refs[rows])


def _ref_array(snap: _Snapshot, ids: Collection[str]) -> Rows:
    """Return each id's ref, -1 when it is not indexed (or its main row is dead). A ref is
    a main row r as r and a delta row j as len(main) + j: the hot path's currency."""
    n_main = len(snap.meta.ids)
    delta_of, row_of, dead = snap.delta_of, snap.row_of, snap.dead
    out: list[int] = []
    for i in ids:
        r = delta_of.get(i)
        if r is not None:
            out.append(n_main + r)
            continue
        r = row_of.get(i)
        out.append(-1 if r is None or dead[r] else r)
    return np.asarray(out, dtype=np.int64)


def _refs_of(snap: _Snapshot, ids: Collection[str]) -> Rows:
    """Return the refs of the indexed ids among these, in order."""
    refs = _ref_array(snap, ids)
    return refs[refs >= 0]


def _ids_of(snap: _Snapshot, refs: Rows) -> list[str]:
    """Return the item ids of these (valid) refs."""
    main_ids, delta_ids = snap.meta.ids, snap.delta_meta.ids
    n_main = len(main_ids)
    return [main_ids[r] if r < n_main else delta_ids[r - n_main] for r in refs.tolist()]


def _vectors_of(snap: _Snapshot, refs: Rows) -> Vectors:
    """Return the vectors of these (valid) refs, one row each."""
    n_main = len(snap.meta.ids)
    in_main = refs < n_main
    if in_main.all():
        return main_vectors(snap.main, snap.x, refs)
    out = np.empty((len(refs), snap.dim), dtype=np.float32)
    if in_main.any():
        out[in_main] = main_vectors(snap.main, snap.x, refs[in_main])
    out[~in_main] = snap.delta_x[refs[~in_main] - n_main]
    return out


def _eligible_of(snap: _Snapshot, refs: Rows, *, provider_id: str | None,
                 kind: str | None) -> Mask:
    """Return which of these refs (-1: not indexed) pass the filters."""
    n_main = len(snap.meta.ids)
    keep = np.zeros(len(refs), dtype=np.bool_)
    in_main = (refs >= 0) & (refs < n_main)
    if in_main.any():
        m, _, _ = snap.main_mask(provider_id, kind)
        keep[in_main] = m[refs[in_main]]
    in_delta = refs >= n_main
    if in_delta.any():
        dm = snap.delta_meta.mask(provider_id=provider_id, kind=kind)
        keep[in_delta] = dm[refs[in_delta] - n_main]
    return keep


def _carries_of(snap: _Snapshot, refs: Rows, tags: Sequence[str]) -> Mask:
    """Return a (len(refs), len(tags)) matrix for these (valid) refs: does the item carry
    the tag?"""
    out = np.zeros((len(refs), len(tags)), dtype=np.bool_)
    if not len(refs) or not tags:
        return out
    n_main = len(snap.meta.ids)
    in_main = refs < n_main
    in_delta = ~in_main
    main_rows = refs[in_main]
    delta_rows = refs[in_delta] - n_main
    for j, t in enumerate(tags):
        tm = snap.main_tag_mask(t)
        if tm is not None:
            out[in_main, j] = tm[main_rows]
        rows = snap.delta_meta.tags.get(t)
        if rows is not None:
            out[in_delta, j] = np.isin(delta_rows, rows)
    return out


# -- the index --------------------------------------------------------------------------
class VectorIndex:
    """Search catalog embeddings with filters; follows a :class:`CatalogFeed`."""

    def __init__(  # noqa: PLR0913  keyword-only tuning knobs, each a setting
        self,
        feed: CatalogFeed,
        *,
        dim: int,
        exact_max: int = 10_000,
        nprobe: int = 32,
        persist_dir: Path | None = None,
        compact_min: int = 2_000,
        compact_fraction: float = 0.05,
        threads: int = 1,
        mmap: bool = False,
    ) -> None:
        self.feed = feed
        self.mmap = mmap  # open a persisted IVF index mapped (shared by processes), not read
        self.dim = dim
        self.exact_max = exact_max
        self.nprobe = nprobe
        self.persist_dir = persist_dir
        self.compact_min = compact_min
        self.compact_fraction = compact_fraction
        # faiss's OpenMP threads fight over 2 cores on single queries (7 ms → 47 ms measured):
        # one thread per search; concurrency comes from the server's threads. OpenMP keeps
        # the count per calling thread (a request thread would still use every core), so
        # each thread that searches sets it once (_one_omp_thread).
        self.threads = threads
        self._omp = threading.local()
        self._one_omp_thread()
        self._snap = self._empty(version=0, epoch="")
        self._write = threading.RLock()
        self._compacting: threading.Thread | None = None
        self._poller = Poller("mingpian-index", self.refresh)
        self.loaded = False

    def _one_omp_thread(self) -> None:
        if not getattr(self._omp, "set", False):
            faiss.omp_set_num_threads(self.threads)
            self._omp.set = True

    # -- lifecycle ----------------------------------------------------------------------
    def _empty(self, *, version: int, epoch: str) -> _Snapshot:
        x = np.zeros((0, self.dim), dtype=np.float32)
        return _Snapshot(version=version, epoch=epoch, dim=self.dim, main=None, x=x,
                         meta=_Meta.of([]), row_of={}, dead=np.zeros(0, dtype=np.bool_),
                         delta_x=x)

    def load(self) -> None:
        """Load the persisted index (then catch up with the log) or build from the catalog."""
        with self._write:
            snap = self._load_persisted()
            if snap is None:
                snap = self._build_full()
                self._snap = snap
                self._persist(snap)
            else:
                self._snap = snap
                self.refresh()
            self.loaded = True

    def start(self, *, poll_s: float = 0.5) -> None:
        """Follow the catalog in a background thread, checking its version every poll_s."""
        self._poller.start(poll_s=poll_s)

    def close(self) -> None:
        """Stop following the catalog and wait for a running compaction."""
        self._poller.stop()
        t = self._compacting
        if t is not None:
            t.join(timeout=60)

    # -- reading ------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """Return the catalog version the served snapshot reflects."""
        return self._snap.version

    @property
    def snapshot(self) -> object:
        """The snapshot in service, opaque: a new one (any catalog change, a compaction) is
        a new object, so answers derived from it can be kept while it `is` the same."""
        return self._snap

    def __len__(self) -> int:
        return self._snap.size

    @property
    def index_type(self) -> str:
        """Return "exact" or "ivf" for the main index now served."""
        main = self._snap.main
        return "ivf" if isinstance(main, faiss.IndexIVF) else "exact"

    def search(
        self,
        queries: Vectors,
        *,
        k: int,
        provider_id: str | None = None,
        kind: str | None = None,
        exclude: Collection[str] = (),
    ) -> list[list[Hit]]:
        """Return, per query row, up to k eligible items by inner product, best first."""
        snap = self._snap
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        scores, refs = self._probe(snap, q, k=k, provider_id=provider_id, kind=kind,
                                   exclude=_refs_of(snap, exclude))
        return [[Hit(i, s) for i, s in zip(_ids_of(snap, r), d, strict=True)]
                for d, r in zip(scores, refs, strict=True)]

    def candidates(
        self,
        queries: Vectors,
        *,
        k: int,
        tags: Sequence[str] = (),
        tag_limit: int = 20,
        provider_id: str | None = None,
        kind: str | None = None,
        exclude: Collection[str] = (),
        extra: Sequence[str] = (),
    ) -> Candidates | None:
        """Return the candidates of one request from one snapshot: each query row's k
        nearest eligible items, then the eligible ones of the extra ids, then
        up to tag_limit eligible items per tag; with their vectors and which of the tags
        each carries. None when there is none.

        All of it works on row numbers (a page view's hot path, issue 17): ids are looked
        up once, for the answer."""
        snap = self._snap
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        excluded = _refs_of(snap, exclude)
        _, near = self._probe(snap, q, k=k, provider_id=provider_id, kind=kind,
                              exclude=excluded)
        extra_refs = _refs_of(snap, extra)
        found = [*near, extra_refs[_eligible_of(snap, extra_refs, provider_id=provider_id,
                                                kind=kind)]]
        if tags:
            found += self._tag_refs(snap, tags, provider_id=provider_id, kind=kind,
                                    limit=tag_limit)
        refs = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
        if len(excluded):
            refs = refs[~np.isin(refs, excluded)]
        _, first = np.unique(refs, return_index=True)
        refs = refs[np.sort(first)]
        if not len(refs):
            return None
        return Candidates(refs=refs, snap=snap, x=_vectors_of(snap, refs),
                          carries=_carries_of(snap, refs, tags))

    def _probe(self, snap: _Snapshot, q: Vectors, *, k: int, provider_id: str | None,
               kind: str | None, exclude: Rows) -> tuple[list[list[float]], list[Rows]]:
        """Return, per query row, the scores and refs (see _refs_of) of up to k eligible,
        not excluded rows, best first (main before delta on a tie)."""
        nq = q.shape[0]
        # Over-fetch by the excluded items (what the user bought), within reason.
        want = k + min(len(exclude), 500)
        d_parts: list[npt.NDArray[np.float32]] = []
        r_parts: list[Rows] = []
        if snap.main is not None:
            m, sel, count = snap.main_mask(provider_id, kind)
            if count:
                d, idx = self._search_main(snap, q, min(want, count), m, sel)
                d_parts.append(d)
                r_parts.append(idx)
        if snap.delta_ids:
            dm = snap.delta_meta.mask(provider_id=provider_id, kind=kind)
            rows = np.flatnonzero(dm)
            if len(rows):
                scores = q @ snap.delta_x[rows].T
                top = min(want, len(rows))
                best = np.argpartition(-scores, top - 1, axis=1)[:, :top]
                d_parts.append(np.take_along_axis(scores, best, axis=1))
                r_parts.append(len(snap.meta.ids) + rows[best])
        if not d_parts:
            return [[] for _ in range(nq)], [np.zeros(0, dtype=np.int64) for _ in range(nq)]
        d_all = np.hstack(d_parts)
        r_all = np.hstack(r_parts)
        ok = (r_all >= 0) & (d_all > -np.inf)
        if len(exclude):
            ok &= ~np.isin(r_all, exclude)
        scores_out: list[list[float]] = []
        refs_out: list[Rows] = []
        for qi in range(nq):
            d_row, r_row = d_all[qi][ok[qi]], r_all[qi][ok[qi]]
            order = np.argsort(-d_row, kind="stable")[:k]
            scores_out.append(d_row[order].tolist())
            refs_out.append(r_row[order])
        return scores_out, refs_out

    def _search_main(self, snap: _Snapshot, q: Vectors, want: int, m: Mask, sel: Any
                     ) -> tuple[npt.NDArray[np.float32], Rows]:
        """Return main's (scores, rows) for each query row; -1 rows pad a short answer."""
        main = snap.main
        assert main is not None
        if isinstance(main, faiss.IndexIVF):
            self._one_omp_thread()
            nprobe = min(self.nprobe, main.nlist)
            while True:
                params = _F.SearchParametersIVF(sel=sel[0] if sel else None, nprobe=nprobe)
                d, idx = main.search(q, want, params=params)
                short = bool(((idx >= 0).sum(axis=1) < want).any())
                # A narrow filter (a small provider) can leave the probed lists without k
                # eligible rows: widen the probe until it finds them or has seen every list.
                if not short or nprobe >= main.nlist:
                    break
                nprobe = min(main.nlist, nprobe * 4)
            return d, idx
        # Exact: one matrix product for every query (faiss's flat search makes one pass
        # over the vectors per query below 20 queries, and a slower one with a filter).
        scores = q @ snap.x.T
        if sel:
            scores[:, ~m] = -np.inf
        idx = np.argpartition(-scores, want - 1, axis=1)[:, :want]
        return np.take_along_axis(scores, idx, axis=1), idx

    def vectors(self, ids: Sequence[str]) -> dict[str, Vectors]:
        """Return the indexed vectors of these items (absent: not indexed)."""
        snap = self._snap
        refs = _refs_of(snap, ids)
        return dict(zip(_ids_of(snap, refs), _vectors_of(snap, refs), strict=True))

    def eligible(self, ids: Sequence[str], *, provider_id: str | None = None,
                 kind: str | None = None) -> list[str]:
        """Return the ids (in order) that are indexed and pass the filters."""
        snap = self._snap
        keep = _eligible_of(snap, _ref_array(snap, ids), provider_id=provider_id, kind=kind)
        return [i for i, ok in zip(ids, keep.tolist(), strict=True) if ok]

    def with_tags(self, tags: Sequence[str], *, provider_id: str | None = None,
                  kind: str | None = None, limit: int = 200) -> dict[str, list[str]]:
        """Return, per tag, up to limit eligible item ids that carry it."""
        snap = self._snap
        found = self._tag_refs(snap, tags, provider_id=provider_id, kind=kind, limit=limit)
        return {t: _ids_of(snap, r) for t, r in zip(tags, found, strict=True)}

    @staticmethod
    def _tag_refs(snap: _Snapshot, tags: Sequence[str], *, provider_id: str | None,
                  kind: str | None, limit: int) -> list[Rows]:
        """Return, per tag, the refs of up to limit eligible items carrying it (delta first)."""
        m, _, _ = snap.main_mask(provider_id, kind)
        dm = snap.delta_meta.mask(provider_id=provider_id, kind=kind) if snap.delta_ids else None
        n_main = len(snap.meta.ids)
        out: list[Rows] = []
        for t in tags:
            got: list[Rows] = []
            have = 0
            if dm is not None:
                rows = snap.delta_meta.tags.get(t)
                if rows is not None:
                    got.append(n_main + rows[dm[rows]][:limit])
                    have = len(got[0])
            rows = snap.meta.tags.get(t)
            if rows is not None and have < limit:
                got.append(rows[m[rows]][: limit - have])
            out.append(np.concatenate(got) if got else np.zeros(0, dtype=np.int64))
        return out

    def some(self, *, provider_id: str | None = None, kind: str | None = None,
             limit: int = 100) -> list[str]:
        """Return up to limit eligible ids (newest changes first) for a popularity fallback."""
        snap = self._snap
        out: list[str] = []
        if snap.delta_ids:
            dm = snap.delta_meta.mask(provider_id=provider_id, kind=kind)
            out += [snap.delta_ids[r] for r in np.flatnonzero(dm)[::-1][:limit]]
        m, _, _ = snap.main_mask(provider_id, kind)
        out += [snap.meta.ids[r] for r in np.flatnonzero(m)[: limit - len(out)]]
        return out[:limit]

    # -- following the feed -------------------------------------------------------------
    def refresh(self) -> bool:
        """Catch up with the feed; return True when a new snapshot was published."""
        with self._write:
            snap = self._snap
            version = self.feed.version()
            if version == snap.version:
                return False
            recreated = version < snap.version or self.feed.epoch() != snap.epoch
            # None: recreated, or the change log was trimmed past our version by the purge.
            caught = None if recreated else self._catch_up(snap)
            if caught is None:
                log.info("catalog %s (version %d → %d): rebuilding the index",
                         "recreated" if recreated else "change log trimmed past us",
                         snap.version, version)
                self._snap = new = self._build_full()
                self._persist(new)
                return True
            self._snap = caught
            self._maybe_compact(caught)
            return True

    def _catch_up(self, snap: _Snapshot) -> _Snapshot | None:
        """Return snap with every logged change after its version applied; None when the
        log no longer holds them all (trimmed by the purge: the index must be rebuilt)."""
        seq = snap.version
        changed: dict[str, None] = {}
        while True:
            batch = self.feed.changes_after(seq, limit=5000)
            if not batch:
                break
            if batch[0][0] != seq + 1:
                return None  # a gap: changes after seq were trimmed before we read them
            for s, item_id in batch:
                changed[item_id] = None
                seq = s
        if not changed:
            return snap
        entries = self.feed.entries(list(changed))
        return _apply(snap, list(changed), entries, version=seq, dim=self.dim)

    def _maybe_compact(self, snap: _Snapshot) -> None:
        pending = len(snap.delta_ids) + int(snap.dead.sum())
        limit = max(self.compact_min, int(self.compact_fraction * len(snap.meta.ids)))
        if pending < limit or (self._compacting is not None and self._compacting.is_alive()):
            return
        t = threading.Thread(target=self._compact, args=(snap,), name="mingpian-compact",
                             daemon=True)
        self._compacting = t
        t.start()

    def _compact(self, base: _Snapshot) -> None:
        """Rebuild main from base (old main rows alive + delta), then replay newer changes."""
        try:
            started = time.perf_counter()
            alive = np.flatnonzero(~base.dead)
            ids = [base.meta.ids[r] for r in alive] + base.delta_ids
            items = _merged_meta(base, alive)
            trained, trained_n = base.trained, base.trained_n
            if len(ids) > self.exact_max and (trained is None or len(ids) > 2 * trained_n):
                trained, trained_n = None, len(ids)
            # Rows are read from the old main a chunk at a time: never a second full copy.
            new = _from_source(ids, _CompactionRows(base, alive), items, version=base.version,
                               epoch=base.epoch, dim=self.dim, exact_max=self.exact_max,
                               trained=trained, trained_n=trained_n)
            with self._write:
                if self._snap.epoch != base.epoch:
                    return
                caught = self._catch_up(new)
                if caught is None:
                    return  # the log was trimmed past it: the next refresh() rebuilds
                new = self._snap = caught
            log.info("index compacted: %d items, %s, %.2f s", new.size,
                     "ivf" if isinstance(new.main, faiss.IndexIVF) else "exact",
                     time.perf_counter() - started)
            self._persist(new)
        except Exception:
            log.exception("index compaction failed; serving the previous snapshot")

    def _build_full(self) -> _Snapshot:
        """Build a snapshot of the whole catalog as the feed holds it now."""
        started = time.perf_counter()
        # Read the version first: changes made during the scan are replayed afterwards.
        version = self.feed.version()
        epoch = self.feed.epoch()
        ids: list[str] = []
        items: list[CatalogItem] = []
        pages = _Pages(self.dim)
        for e in self.feed.iter_entries():
            if not e.item.active or e.vector.shape != (self.dim,):
                continue
            ids.append(e.item.id)
            items.append(e.item)
            pages.append(e.vector)
        snap = _from_source(ids, pages, _Meta.of(items), version=version, epoch=epoch,
                            dim=self.dim, exact_max=self.exact_max, trained=None,
                            trained_n=len(ids))
        del pages
        caught = self._catch_up(snap)
        if caught is None:
            # The log was trimmed past the version read before the scan: refresh() finds
            # the gap again and rebuilds; serve what the scan saw meanwhile.
            return snap
        snap = caught
        log.info("index built: %d items at version %d, %.2f s", snap.size, snap.version,
                 time.perf_counter() - started)
        return snap

    # -- persistence (embedded mode) ----------------------------------------------------
    def _persist(self, snap: _Snapshot) -> None:
        if self.persist_dir is None or snap.delta_ids or snap.dead.any():
            return
        try:
            _save(snap, self.persist_dir)
        except OSError:
            log.exception("could not persist the index under %s", self.persist_dir)

    def _load_persisted(self) -> _Snapshot | None:
        if self.persist_dir is None:
            return None
        try:
            snap = _load(self.persist_dir, dim=self.dim, mmap=self.mmap)
        except (OSError, ValueError, KeyError, RuntimeError):
            log.exception("persisted index unreadable: rebuilding")
            return None
        if snap is None:
            return None
        if snap.epoch != self.feed.epoch() or snap.version > self.feed.version():
            log.info("persisted index belongs to another catalog: rebuilding")
            return None
        log.info("index loaded from %s: %d items at version %d", self.persist_dir, snap.size,
                 snap.version)
        return snap


def _from_rows(  # noqa: PLR0913  one parameter per _Snapshot field it is built from
        ids: list[str], x: Vectors, meta: _Meta, *, version: int, epoch: str, dim: int,
        exact_max: int, trained: faiss.Index | None, trained_n: int) -> _Snapshot:
    return _from_source(ids, _ArrayRows(x), meta, version=version, epoch=epoch, dim=dim,
                        exact_max=exact_max, trained=trained, trained_n=trained_n)


class _RowSource(Protocol):
    """Rows of vectors to build a main index from, read a part at a time."""

    def read(self, a: int, b: int) -> Vectors:
        """Return rows a..b-1."""
        ...

    def take(self, rows: Rows) -> Vectors:
        """Return these rows (sorted)."""
        ...


@dataclass(frozen=True)
class _ArrayRows:
    """Rows of one array."""

    x: Vectors

    def read(self, a: int, b: int) -> Vectors:
        return self.x[a:b]

    def take(self, rows: Rows) -> Vectors:
        return self.x[rows]


class _Pages:
    """Rows appended one at a time into fixed pages: a full build holds each vector once
    (a list of per-item arrays and its vstack held it three times)."""

    PAGE = 4096

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.pages: list[Vectors] = []
        self.n = 0

    def append(self, v: Vectors) -> None:
        """Add one row."""
        if self.n % self.PAGE == 0:
            self.pages.append(np.empty((self.PAGE, self.dim), dtype=np.float32))
        self.pages[-1][self.n % self.PAGE] = v
        self.n += 1

    def read(self, a: int, b: int) -> Vectors:
        return self.take(np.arange(a, b, dtype=np.int64))

    def take(self, rows: Rows) -> Vectors:
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        page, off = np.divmod(rows, self.PAGE)
        for p in np.unique(page):
            hit = page == p
            out[hit] = self.pages[int(p)][off[hit]]
        return out


@dataclass(frozen=True)
class _CompactionRows:
    """A snapshot's alive main rows followed by its delta rows."""

    base: _Snapshot
    alive: Rows

    def read(self, a: int, b: int) -> Vectors:
        return self.take(np.arange(a, b, dtype=np.int64))

    def take(self, rows: Rows) -> Vectors:
        n = len(self.alive)
        in_main = rows < n
        out = np.empty((len(rows), self.base.dim), dtype=np.float32)
        out[in_main] = main_vectors(self.base.main, self.base.x, self.alive[rows[in_main]])
        out[~in_main] = self.base.delta_x[rows[~in_main] - n]
        return out


def _from_source(  # noqa: PLR0913  one parameter per _Snapshot field it is built from
        ids: list[str], src: _RowSource, meta: _Meta, *, version: int, epoch: str, dim: int,
        exact_max: int, trained: faiss.Index | None, trained_n: int) -> _Snapshot:
    main, xv = build_main_from(src.read, src.take, n=len(ids), dim=dim, exact_max=exact_max,
                               trained=trained)
    return _Snapshot(
        version=version, epoch=epoch, dim=dim, main=main, x=xv, meta=meta,
        row_of={i: r for r, i in enumerate(ids)}, dead=np.zeros(len(ids), dtype=np.bool_),
        delta_x=np.zeros((0, dim), dtype=np.float32),
        trained=trained if trained is not None else _empty_trained(main),
        trained_n=trained_n if trained is not None else len(ids),
    )


def _apply(snap: _Snapshot, changed: list[str], entries: dict[str, IndexEntry], *,
           version: int, dim: int) -> _Snapshot:
    """Return a new snapshot: changed ids leave main/delta; current active ones join the delta."""
    dead = snap.dead.copy()
    for i in changed:
        r = snap.row_of.get(i)
        if r is not None:
            dead[r] = True
    changed_set = set(changed)
    keep = [r for r, i in enumerate(snap.delta_ids) if i not in changed_set]
    items = [snap.delta_items[r] for r in keep]
    vecs = [snap.delta_x[keep]] if keep else []
    for i in changed:
        e = entries.get(i)
        if e is None or not e.item.active or e.vector.shape != (dim,):
            continue
        items.append(e.item)
        vecs.append(e.vector[None, :])
    delta_x = (np.ascontiguousarray(np.vstack(vecs), dtype=np.float32) if vecs
               else np.zeros((0, dim), dtype=np.float32))
    meta = _Meta.of(items)
    return _Snapshot(
        version=version, epoch=snap.epoch, dim=dim, main=snap.main, x=snap.x, meta=snap.meta,
        row_of=snap.row_of, dead=dead, delta_items=items, delta_x=delta_x, delta_meta=meta,
        delta_of={i: r for r, i in enumerate(meta.ids)}, trained=snap.trained,
        trained_n=snap.trained_n,
    )


def _merged_meta(base: _Snapshot, alive: Rows) -> _Meta:
    """Return the metadata of base's alive main rows followed by its delta rows."""
    meta, dmeta = base.meta, base.delta_meta
    n = len(alive)
    remap = np.full(len(meta.ids), -1, dtype=np.int64)
    remap[alive] = np.arange(n)

    def merge(a: dict[str, Rows], b: dict[str, Rows]) -> dict[str, Rows]:
        out: dict[str, Rows] = {}
        for key in set(a) | set(b):
            ra = remap[a[key]] if key in a else np.zeros(0, dtype=np.int64)
            ra = ra[ra >= 0]
            rb = b[key] + n if key in b else np.zeros(0, dtype=np.int64)
            rows = np.concatenate([ra, rb])
            if len(rows):
                out[key] = rows
        return out

    return _Meta(
        ids=[meta.ids[r] for r in alive] + list(dmeta.ids),
        kind=np.concatenate([meta.kind[alive], dmeta.kind]),
        universal=np.concatenate([meta.universal[alive], dmeta.universal]),
        offers=merge(meta.offers, dmeta.offers),
        tags=merge(meta.tags, dmeta.tags),
    )


# -- files --------------------------------------------------------------------------------
def _save(snap: _Snapshot, folder: Path) -> None:
    """Write snap as catalog-<version>.{faiss,npz} and point CURRENT at it, atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"catalog-{snap.version}"
    meta = snap.meta
    arrays: dict[str, Any] = {
        "ids": np.asarray(meta.ids, dtype=np.str_),
        "kind": meta.kind,
        "universal": meta.universal,
    }
    for name, groups in (("offers", meta.offers), ("tags", meta.tags)):
        keys = sorted(groups)
        arrays[f"{name}_keys"] = np.asarray(keys, dtype=np.str_)
        arrays[f"{name}_len"] = np.asarray([len(groups[k]) for k in keys], dtype=np.int64)
        arrays[f"{name}_rows"] = (np.concatenate([groups[k] for k in keys]) if keys
                                  else np.zeros(0, dtype=np.int64))
    is_ivf = isinstance(snap.main, faiss.IndexIVF)  # its lists hold the vectors: no "x"
    tmp_npz = folder / f".{stem}.npz.{os.getpid()}.tmp"
    with tmp_npz.open("wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp_npz, folder / f"{stem}.npz")
    if snap.main is not None:
        tmp = folder / f".{stem}.faiss.{os.getpid()}.tmp"
        faiss.write_index(snap.main, str(tmp))
        os.replace(tmp, folder / f"{stem}.faiss")
    header = {"version": snap.version, "epoch": snap.epoch, "dim": snap.dim, "stem": stem,
              "has_main": snap.main is not None, "ivf": is_ivf, "trained_n": snap.trained_n}
    tmp_cur = folder / f".CURRENT.{os.getpid()}.tmp"
    tmp_cur.write_text(json.dumps(header))
    os.replace(tmp_cur, folder / "CURRENT")
    for old in folder.glob("catalog-*"):
        if not old.name.startswith(stem + "."):
            old.unlink(missing_ok=True)


def _no_prefetch(main: faiss.Index) -> None:
    """Turn off the prefetch threads of a mapped IVF index's lists.

    faiss reads mapped lists as ``OnDiskInvertedLists``, which by default starts 32 threads
    to prefetch the probed lists on *every* search: at 100k items that was 1.4–2.7 instead
    of 0.27 ms of CPU a search and ~56 page faults (the threads' new stacks), in the
    calling thread alone. The pages are shared and resident; prefetching them buys nothing
    (bench/bench_mmap_prefetch.py, BENCHMARKS.md issue 17)."""
    ivf: Any = faiss.extract_index_ivf(main)
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    if isinstance(lists, faiss.OnDiskInvertedLists):
        lists.prefetch_nthread = 0


def _load(folder: Path, *, dim: int, mmap: bool = False) -> _Snapshot | None:
    cur = folder / "CURRENT"
    if not cur.exists():
        return None
    header = json.loads(cur.read_text())
    if header["dim"] != dim:
        return None
    stem = header["stem"]
    with np.load(folder / f"{stem}.npz") as z:
        ids = [str(s) for s in z["ids"]]

        def groups(name: str) -> dict[str, Rows]:
            keys = [str(s) for s in z[f"{name}_keys"]]
            bounds = np.cumsum(z[f"{name}_len"])
            rows = z[f"{name}_rows"]
            return {k: rows[(bounds[j] - z[f"{name}_len"][j]):bounds[j]]
                    for j, k in enumerate(keys)}

        meta = _Meta(ids=ids, kind=z["kind"], universal=z["universal"],
                     offers=groups("offers"), tags=groups("tags"))
    # Mapped when asked: every process on the machine (serve's, its consumer's, those of
    # `serve --workers N`) shares the pages of one file. (An exact index, at most exact_max
    # rows, is read: its rows are viewed in place.)
    main = (faiss.read_index(str(folder / f"{stem}.faiss"),
                             faiss.IO_FLAG_MMAP if header["ivf"] and mmap else 0)
            if header["has_main"] else None)
    if main is not None and header["ivf"] and mmap:
        _no_prefetch(main)
    n = len(ids)
    x = _own_vectors(main, n=n, dim=dim)
    if main is not None and main.ntotal != n:
        raise ValueError("persisted index and ids disagree")
    return _Snapshot(
        version=int(header["version"]), epoch=str(header["epoch"]), dim=dim, main=main, x=x,
        meta=meta, row_of={i: r for r, i in enumerate(ids)}, dead=np.zeros(n, dtype=np.bool_),
        delta_x=np.zeros((0, dim), dtype=np.float32), trained=_empty_trained(main),
        trained_n=int(header.get("trained_n", n)),
    )
