"""BM25 over jieba tokens of the catalog, following the catalog's change log.

The lexical half of hybrid retrieval (issue 16). Items are tokenised by
:class:`nlp.tokenize.Tokenizer` taught the catalog's own vocabulary (every item tag, plus
the taxonomy's terms given at construction), so 敏感肌 or 辅食添加 stay one token.

A snapshot is a term-major posting list (CSR: ``indptr`` per term, item rows sorted within
a term, one BM25 weight per posting), built with numpy from each item's term ids in one
pass; readers take the snapshot by reference, writers build a new one and swap it. A query
costs a few vector operations over the postings of its terms, never a loop over items.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from catalog.feed import CatalogFeed
from models.catalog import CatalogItem
from nlp.poller import Poller
from nlp.tokenize import Tokenizer

log = logging.getLogger("mingpian.lexical")

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

K1 = 1.2
B = 0.75


@dataclass(frozen=True)
class QueryTerms:
    """A query's distinct content tokens and, for those the catalog knows, their term ids."""

    tokens: list[str]
    term_ids: I64


@dataclass(frozen=True)
class _Snapshot:
    version: int
    epoch: str
    ids: list[str]
    row_of: dict[str, int]
    indptr: I64  # term t's postings: rows[indptr[t]:indptr[t+1]]
    rows: I64
    weights: F32

    @property
    def size(self) -> int:
        return len(self.ids)


def _empty(version: int = 0, epoch: str = "") -> _Snapshot:
    return _Snapshot(version, epoch, [], {}, np.zeros(1, dtype=np.int64),
                     np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))


class LexicalIndex:
    """BM25 (Okapi, k1 1.2, b 0.75) over the active items of a :class:`CatalogFeed`."""

    def __init__(self, feed: CatalogFeed, *, tokenizer: Tokenizer | None = None,
                 terms: Iterable[str] = ()) -> None:
        self.feed = feed
        self.tokenizer = tokenizer or Tokenizer()
        self.tokenizer.add_terms(terms)
        self._vocab: dict[str, int] = {}
        self._docs: dict[str, npt.NDArray[np.int32]] = {}  # item id → its term ids
        self._snap = _empty()
        self._write = threading.RLock()
        self._poller = Poller("mingpian-lexical", self._follow)
        self.loaded = False

    # -- lifecycle -----------------------------------------------------------------------
    def load(self) -> None:
        """Tokenise the whole catalog and publish the first snapshot."""
        with self._write:
            version, epoch = self.feed.version(), self.feed.epoch()
            items = [e.item for e in self.feed.iter_entries() if e.item.active]
            self._docs = {}
            self._add(items)
            self._publish(version, epoch)
            # Changes logged during the scan are replayed now.
            self.refresh()
            self.loaded = True

    def _follow(self) -> None:
        if self.loaded:
            self.refresh()
        else:
            self.load()

    def start(self, *, poll_s: float = 0.5) -> None:
        """Follow the catalog in a background thread (after loading it there, if needed)."""
        self._poller.start(poll_s=poll_s, first_now=not self.loaded)

    def close(self) -> None:
        """Stop following the catalog."""
        self._poller.stop()

    def refresh(self) -> bool:
        """Catch up with the feed; return True when a new snapshot was published."""
        with self._write:
            snap = self._snap
            version = self.feed.version()
            if version == snap.version:
                return False
            if version < snap.version or self.feed.epoch() != snap.epoch:
                self.load()
                return True
            seq = snap.version
            changed: dict[str, None] = {}
            while True:
                batch = self.feed.changes_after(seq, limit=5000)
                if not batch:
                    break
                if batch[0][0] != seq + 1:  # the log was trimmed past us: start over
                    self.load()
                    return True
                for s, item_id in batch:
                    changed[item_id] = None
                    seq = s
            entries = self.feed.entries(list(changed))
            for i in changed:
                self._docs.pop(i, None)
            self._add([e.item for e in entries.values() if e.item.active])
            self._publish(seq, snap.epoch)
            return True

    def __len__(self) -> int:
        return self._snap.size

    @property
    def version(self) -> int:
        """Return the catalog version the served snapshot reflects."""
        return self._snap.version

    @property
    def snapshot(self) -> object:
        """The snapshot in service, opaque: a new one is a new object (see
        VectorIndex.snapshot)."""
        return self._snap

    # -- building --------------------------------------------------------------------------
    def _add(self, items: Sequence[CatalogItem]) -> None:
        self.tokenizer.add_terms(t for it in items for t in it.tags)
        vocab = self._vocab
        for it in items:
            toks = self.tokenizer.tokens(it.embedding_text())
            self._docs[it.id] = np.fromiter(
                (vocab.setdefault(t, len(vocab)) for t in toks), dtype=np.int32, count=len(toks))

    def _publish(self, version: int, epoch: str) -> None:
        started = time.perf_counter()
        ids = list(self._docs)
        n, v = len(ids), len(self._vocab)
        if n == 0:
            self._snap = _empty(version, epoch)
            return
        lens = np.fromiter((len(d) for d in self._docs.values()), dtype=np.int64, count=n)
        terms = (np.concatenate(list(self._docs.values())).astype(np.int64) if lens.sum()
                 else np.zeros(0, dtype=np.int64))
        rows = np.repeat(np.arange(n, dtype=np.int64), lens)
        keys, tf = np.unique(terms * n + rows, return_counts=True)  # term-major, rows sorted
        t_of, r_of = keys // n, keys % n
        df = np.bincount(t_of, minlength=v)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        avgdl = max(float(lens.mean()), 1e-9)
        norm = K1 * (1 - B + B * lens[r_of] / avgdl)
        weights = (idf[t_of] * tf * (K1 + 1) / (tf + norm)).astype(np.float32)
        indptr = np.zeros(v + 1, dtype=np.int64)
        np.cumsum(df, out=indptr[1:])
        self._snap = _Snapshot(version, epoch, ids, {i: r for r, i in enumerate(ids)},
                               indptr, r_of, weights)
        log.debug("lexical index: %d items, %d terms, %.2f s", n, v,
                  time.perf_counter() - started)

    # -- reading ---------------------------------------------------------------------------
    def terms(self, text: str) -> QueryTerms:
        """Return the query's distinct content tokens and the known ones' term ids."""
        toks = list(dict.fromkeys(t for t in self.tokenizer.tokens(text)
                                  if any(c.isalnum() for c in t)))
        vocab = self._vocab
        known = [vocab[t] for t in toks if t in vocab]
        snap_terms = len(self._snap.indptr) - 1
        return QueryTerms(toks, np.asarray([t for t in known if t < snap_terms],
                                           dtype=np.int64))

    def search(self, q: QueryTerms, *, k: int) -> list[tuple[str, float]]:
        """Return up to k (item id, BM25 score) with a score > 0, best first."""
        snap = self._snap
        if not len(q.term_ids) or not snap.size:
            return []
        starts, ends = snap.indptr[q.term_ids], snap.indptr[q.term_ids + 1]
        sel = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends, strict=True)])
        if not len(sel):
            return []
        scores = np.bincount(snap.rows[sel], weights=snap.weights[sel], minlength=snap.size)
        hit = np.flatnonzero(scores)
        if len(hit) > k:
            hit = hit[np.argpartition(-scores[hit], k - 1)[:k]]
        hit = hit[np.argsort(-scores[hit], kind="stable")]
        return [(snap.ids[r], float(scores[r])) for r in hit]

    def score(self, q: QueryTerms, ids: Sequence[str]) -> tuple[F32, F32]:
        """Return, for these items, their BM25 score and the share of the query's content
        tokens they contain (0 for items not indexed)."""
        snap = self._snap
        bm25 = np.zeros(len(ids), dtype=np.float32)
        matched = np.zeros(len(ids), dtype=np.float32)
        if not ids or not snap.size or not q.tokens:
            return bm25, matched
        rows = np.asarray([snap.row_of.get(i, -1) for i in ids], dtype=np.int64)
        for t in q.term_ids:
            a, b = int(snap.indptr[t]), int(snap.indptr[t + 1])
            if a == b:
                continue
            post = snap.rows[a:b]
            pos = np.minimum(np.searchsorted(post, rows), b - a - 1)
            found = (post[pos] == rows) & (rows >= 0)
            bm25 += np.where(found, snap.weights[a:b][pos], 0.0).astype(np.float32)
            matched += found
        return bm25, (matched / max(len(q.tokens), 1)).astype(np.float32)


def saturate(bm25: F32 | npt.NDArray[np.float64], half: float = 5.0) -> npt.NDArray[np.float64]:
    """Map BM25 scores (0..∞) onto 0..1: half at ``half``."""
    b = np.asarray(bm25, dtype=np.float64)
    return b / (b + half)
