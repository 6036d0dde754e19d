"""Interest tagging: keyword hits and embedding similarities, combined into one calibrated
confidence per tag by a logistic model fitted on labelled chat (bench/bench_tagging.py fit).

For each contentful message and each tag the tagger computes tag-agnostic features:

- keyword evidence: a tag name or keyword occurs in the normalised text (substring), is one
  jieba token, and how many distinct ones occur;
- six similarities between the message embedding and the tag's description, keywords,
  example sentences, their centroids, and a ridge "probe" trained on those sentences at
  start-up (with off-topic chatter as an extra "none" class); for each, the raw value, the
  gap to the best other tag, a z-score across tags and whether it ranks first;
- the "none" score of the probe (how much the message looks like off-topic chatter).

Because no feature names a tag, the same coefficients serve a replaced or extended
taxonomy. A message with no content (好的, 哈哈, [表情], 👍, a lone "1") gets no tags and
costs no embedding.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nlp.embed import Embedder
from nlp.taxonomy import Taxonomy
from nlp.tokenize import Tokenizer, normalize, read_lines, strip_noise

log = logging.getLogger("mingpian.nlp.tagging")

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

SIMILARITIES = ("desc", "centroid", "keyword", "example", "example_centroid", "probe")
FEATURES: tuple[str, ...] = (
    "kw", "kw_token", "kw_count", "any_kw",
    *(f"{s}{x}" for s in SIMILARITIES for x in ("", "_gap", "_z", "_top")),
    "none",
)
MAX_TAGS = 3
_PROBE_LAMBDA = 1.0
_MIN_CONTENT = 2  # characters: a message shorter than this, once cleaned, says nothing
_NEWTON_TOL = 1e-8  # fit_logistic stops once no weight moves by more than this


@dataclass(frozen=True)
class TagHit:
    """One tag of a message with its calibrated confidence (0–1)."""

    tag: str
    confidence: float


@dataclass(frozen=True)
class TagResult:
    """The tags of one message (best first), its embedding, and whether it had no content."""

    tags: list[TagHit]
    vector: np.ndarray | None
    contentless: bool


@dataclass(frozen=True)
class Calibration:
    """Coefficients of the logistic combination, fitted for one embedder."""

    embedder: str
    features: tuple[str, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float  # a tag needs at least this confidence
    fitted_on: str = ""
    l2: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the calibration as a JSON object."""
        d = asdict(self)
        d["features"] = list(self.features)
        d["coef"] = [round(c, 6) for c in self.coef]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Calibration:
        """Build a calibration from its JSON object."""
        return cls(embedder=str(d["embedder"]), features=tuple(d["features"]),
                   coef=tuple(float(c) for c in d["coef"]), intercept=float(d["intercept"]),
                   threshold=float(d["threshold"]), fitted_on=str(d.get("fitted_on", "")),
                   l2=float(d.get("l2", 1.0)), extra=dict(d.get("extra", {})))

    def accept(self, probs: F32, max_tags: int) -> list[int]:
        """Return the indices of the tags kept from one message's probabilities, best first:
        at most max_tags, each reaching the threshold."""
        order = np.argsort(-probs, kind="stable")[:max_tags]
        return [int(i) for i in order if probs[i] >= self.threshold]


def default_calibration_path() -> Path:
    """Return the path of the shipped calibration file."""
    return Path(str(resources.files("nlp") / "dicts" / "tagger_calibration.json"))


def load_calibration(embedder_name: str, path: Path | None = None) -> Calibration:
    """Return the calibration fitted for this embedder, else the file's default one."""
    doc = json.loads((path or default_calibration_path()).read_text(encoding="utf-8"))
    models: dict[str, Any] = doc["models"]
    if embedder_name in models:
        return Calibration.from_json(models[embedder_name])
    log.warning("no tagger calibration for embedder %r; using the one fitted for %r "
                "(refit: bench/bench_tagging.py fit --embedder SPEC)", embedder_name, doc["default"])
    return Calibration.from_json(models[doc["default"]])


def _unit(m: npt.NDArray[Any]) -> F32:
    n = np.linalg.norm(m, axis=-1, keepdims=True)
    n[n == 0] = 1.0
    return np.asarray(m / n, dtype=np.float32)


class _Index:
    """Everything derived from one taxonomy version and the embedder."""

    def __init__(self, taxonomy: Taxonomy, embedder: Embedder) -> None:
        self.version = taxonomy.version
        tags = taxonomy.tags
        self.names = [t.tag for t in tags]
        n_tags = len(tags)
        # Keyword lookup by first character: scanning positions beats 800 substring searches.
        self.terms: list[list[str]] = []
        self.by_first: dict[str, list[tuple[str, int]]] = {}
        for i, t in enumerate(tags):
            terms = list(dict.fromkeys(n for term in t.terms() if (n := normalize(term).strip())))
            self.terms.append(terms)
            for term in terms:
                self.by_first.setdefault(term[0], []).append((term, i))
        self.token_owner: dict[str, list[int]] = {}
        for i, terms in enumerate(self.terms):
            for term in terms:
                self.token_owner.setdefault(term, []).append(i)

        kw_texts = [term for terms in self.terms for term in terms]
        kw_owner = np.array([i for i, terms in enumerate(self.terms) for _ in terms])
        # A tag without examples uses its description as its one example.
        ex_texts: list[str] = []
        ex_owner: list[int] = []
        for i, t in enumerate(tags):
            sentences = [s for e in t.examples if (s := _prepare(e))] or [_prepare(t.description)]
            ex_texts += sentences
            ex_owner += [i] * len(sentences)
        desc_texts = [_prepare(t.description) or t.tag for t in tags]
        off_texts = [s for e in taxonomy.offtopic if (s := _prepare(e))]
        everything = desc_texts + kw_texts + ex_texts + off_texts
        vecs = embedder.encode(everything) if everything else np.zeros((0, embedder.dim),
                                                                        np.float32)
        a, b, c = n_tags, n_tags + len(kw_texts), n_tags + len(kw_texts) + len(ex_texts)
        self.desc = vecs[:a]
        self.kw = vecs[a:b]
        self.ex = vecs[b:c]
        off = vecs[c:]
        self.kw_starts = _starts(kw_owner, n_tags)
        ex_owner_a = np.array(ex_owner)
        self.ex_starts = _starts(ex_owner_a, n_tags)
        kw_mean = np.add.reduceat(self.kw, self.kw_starts, axis=0) / np.diff(
            np.append(self.kw_starts, len(self.kw)))[:, None]
        self.centroid = _unit(self.desc + _unit(kw_mean))
        self.ex_centroid = _unit(np.add.reduceat(self.ex, self.ex_starts, axis=0))
        # Ridge probe: a linear classifier from sentence vectors to tags (+ a "none" class),
        # trained on the taxonomy's own sentences; a closed form, milliseconds.
        x = np.vstack([self.ex, self.desc, self.kw, off]).astype(np.float64)
        y = np.zeros((len(x), n_tags + 1))
        owners = np.concatenate([ex_owner_a, np.arange(n_tags), kw_owner]).astype(int)
        y[np.arange(len(owners)), owners] = 1.0
        y[len(owners):, n_tags] = 1.0
        xb = np.hstack([x, np.ones((len(x), 1))])
        reg = _PROBE_LAMBDA * np.eye(xb.shape[1])
        reg[-1, -1] = 0.0
        self.probe = np.linalg.solve(xb.T @ xb + reg, xb.T @ y).astype(np.float32)

    def keyword_counts(self, text: str) -> F32:
        """Return, per tag, how many distinct names/keywords occur in normalised text."""
        found: set[tuple[str, int]] = set()
        by_first = self.by_first
        for pos, ch in enumerate(text):
            for term, owner in by_first.get(ch, ()):
                if text.startswith(term, pos):
                    found.add((term, owner))
        out = np.zeros(len(self.names), dtype=np.float32)
        for _, owner in found:
            out[owner] += 1.0
        return out

    def token_hits(self, tokens: Sequence[str]) -> F32:
        """Return, per tag, whether one of its terms is a whole token."""
        out = np.zeros(len(self.names), dtype=np.float32)
        for tok in tokens:
            for owner in self.token_owner.get(tok, ()):
                out[owner] = 1.0
        return out

    def similarities(self, v: F32) -> dict[str, F32]:
        """Return each similarity (n, tags) of the message vectors v (n, dim)."""
        kw = v @ self.kw.T
        ex = v @ self.ex.T
        probe = np.hstack([v, np.ones((len(v), 1), np.float32)]) @ self.probe
        return {
            "desc": v @ self.desc.T,
            "centroid": v @ self.centroid.T,
            "keyword": np.maximum.reduceat(kw, self.kw_starts, axis=1),
            "example": np.maximum.reduceat(ex, self.ex_starts, axis=1),
            "example_centroid": v @ self.ex_centroid.T,
            "probe": probe[:, :-1],
            "none": probe[:, -1],
        }


def _starts(owner: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.intp]:
    # Rows are grouped by owner in order and every owner has at least one row.
    counts = np.bincount(owner, minlength=n)
    if n and counts.min() == 0:
        raise ValueError("every tag needs at least one term and one example")
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.intp)


def _prepare(text: str) -> str:
    """Return the text the embedder sees: normalised, without emoji, codes and links."""
    return " ".join(strip_noise(normalize(text)).split())


def _rank_features(s: F32) -> list[F32]:
    """Return [s, gap to the best other tag, z-score across tags, is-top] for (n, tags)."""
    order = np.sort(s, axis=1)
    best, second = order[:, -1:], order[:, -2:-1] if s.shape[1] > 1 else order[:, -1:]
    top = (s >= best).astype(np.float32)
    other = np.where(top > 0, second, best)
    z = (s - s.mean(axis=1, keepdims=True)) / (s.std(axis=1, keepdims=True) + 1e-6)
    return [s, s - other, z, top]


class Tagger:
    """Tags chat messages with interests from a taxonomy, using an embedder."""

    def __init__(self, *, taxonomy: Taxonomy, embedder: Embedder,
                 tokenizer: Tokenizer | None = None, calibration: Calibration | None = None,
                 chitchat: Sequence[str] | None = None, max_tags: int = MAX_TAGS) -> None:
        self.taxonomy = taxonomy
        self.embedder = embedder
        self.tokenizer = tokenizer or Tokenizer()
        self.calibration = calibration or load_calibration(embedder.name)
        if self.calibration.features != FEATURES:
            raise ValueError("calibration was fitted for other features: refit it")
        self._coef = np.asarray(self.calibration.coef, dtype=np.float32)
        self.max_tags = max_tags
        phrases = read_lines("chitchat.txt") if chitchat is None else list(chitchat)
        self._chitchat = frozenset(p.replace(" ", "") for p in (normalize(x) for x in phrases))
        self._chit_tokens: frozenset[str] | None = None
        self._quiet_chars: frozenset[str] = frozenset()  # every char of those and stop words
        self._index: _Index | None = None
        self._lock = threading.Lock()

    # -- index ---------------------------------------------------------------
    def _current(self) -> _Index:
        idx = self._index
        if idx is not None and idx.version == self.taxonomy.version:
            return idx
        with self._lock:
            idx = self._index
            if idx is None or idx.version != self.taxonomy.version:
                self.tokenizer.add_terms(self.taxonomy.terms())
                if self._chit_tokens is None:
                    toks = {t for p in self._chitchat for t in self.tokenizer.cut(p)}
                    self._chit_tokens = frozenset(toks | self._chitchat)
                    words = self._chit_tokens | self.tokenizer.stopwords
                    self._quiet_chars = frozenset(c for w in words for c in w)
                idx = _Index(self.taxonomy, self.embedder)
                self._index = idx  # published last: readers outside the lock see it whole
            return idx

    def warm(self) -> None:
        """Build the tag index and the tokeniser now instead of on the first message."""
        self._current()

    @property
    def tag_names(self) -> list[str]:
        """Return the tags this tagger can emit, in taxonomy order."""
        return list(self._current().names)

    # -- analysis ------------------------------------------------------------
    def _analyse(self, text: str, idx: _Index) -> tuple[str, list[str], F32, bool]:
        """Return (embedding text, tokens, keyword counts, contentless) of one message.

        Tokens matter for a message with a keyword hit (is the keyword a whole token?) and
        for deciding whether a message is only chit-chat and stop words; jieba is skipped
        where neither question arises (a message with no hit holding a character that no
        chit-chat or stop word has), which leaves every result the same.
        """
        norm = normalize(text)
        clean = strip_noise(norm)
        joined = " ".join(clean.split())
        counts = idx.keyword_counts(norm)
        compact = clean.replace(" ", "")
        if counts.any():
            return joined, self.tokenizer.cut(clean), counts, False
        if len(compact) < _MIN_CONTENT or compact in self._chitchat:
            return joined, [], counts, True
        if any(c not in self._quiet_chars and not c.isdigit() for c in compact):
            return joined, [], counts, False
        chit = self._chit_tokens or frozenset()
        stop = self.tokenizer.stopwords
        tokens = self.tokenizer.cut(clean)
        contentless = all(t in chit or t in stop or t.isdigit() for t in tokens)
        return joined, tokens, counts, contentless

    def is_contentless(self, text: str) -> bool:
        """Return True for a message with nothing to tag (greetings, thanks, emoji…)."""
        return self._analyse(text, self._current())[3]

    def keyword_tags(self, text: str) -> list[str]:
        """Return the tags whose name or a keyword occurs in the text (the plain baseline)."""
        idx = self._current()
        counts = idx.keyword_counts(normalize(text))
        return [idx.names[i] for i in np.flatnonzero(counts)]

    def features(self, texts: Sequence[str]) -> tuple[list[bool], F32, F32 | None, list[str]]:
        """Return (contentless per text, features (n_contentful, tags, FEATURES), vectors,
        tag names); one embedder call for every contentful text."""
        idx = self._current()
        analysed = [self._analyse(t, idx) for t in texts]
        contentless = [a[3] for a in analysed]
        live = [a for a in analysed if not a[3]]
        n_tags = len(idx.names)
        if not live:
            return contentless, np.zeros((0, n_tags, len(FEATURES)), np.float32), None, idx.names
        vecs = self.embedder.encode([a[0] or "。" for a in live])
        sims = idx.similarities(vecs)
        counts = np.stack([a[2] for a in live])
        tok = np.stack([idx.token_hits(a[1]) for a in live])
        kw = (counts > 0).astype(np.float32)
        cols: list[F32] = [kw, tok, np.log1p(counts),
                           np.repeat(kw.max(axis=1, keepdims=True), n_tags, axis=1)]
        for name in SIMILARITIES:
            cols += _rank_features(sims[name])
        cols.append(np.repeat(sims["none"][:, None], n_tags, axis=1))
        return contentless, np.stack(cols, axis=2).astype(np.float32), vecs, idx.names

    # -- tagging -------------------------------------------------------------
    def tag(self, text: str) -> TagResult:
        """Return the tags of one message."""
        return self.tag_batch([text])[0]

    def tag_batch(self, texts: Sequence[str]) -> list[TagResult]:
        """Return the tags of each message; one embedder call for all contentful ones."""
        contentless, feats, vecs, names = self.features(texts)
        out: list[TagResult] = []
        if vecs is not None:
            z = feats @ self._coef + np.float32(self.calibration.intercept)
            probs = 1.0 / (1.0 + np.exp(-z))
        row = 0
        for empty in contentless:
            if empty:
                out.append(TagResult(tags=[], vector=None, contentless=True))
                continue
            p = probs[row]
            hits = [TagHit(names[i], round(float(p[i]), 4))
                    for i in self.calibration.accept(p, self.max_tags)]
            out.append(TagResult(tags=hits, vector=vecs[row] if vecs is not None else None,
                                 contentless=False))
            row += 1
        return out


# -- fitting ------------------------------------------------------------------------------

def fit_logistic(x: F64, y: F64, *, l2: float, iters: int = 100) -> tuple[F64, float]:
    """Fit L2-regularised logistic regression by Newton's method; return (coef, intercept)."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    reg = np.eye(d + 1) * l2
    reg[-1, -1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(xb @ w)))
        grad = xb.T @ (p - y) + reg @ w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < _NEWTON_TOL:
            break
    return w[:-1], float(w[-1])


def micro_prf(pred: Sequence[set[str]], gold: Sequence[set[str]]) -> tuple[float, float, float]:
    """Return micro-averaged (precision, recall, F1) of predicted against gold tag sets."""
    tp = sum(len(p & g) for p, g in zip(pred, gold, strict=True))
    fp = sum(len(p - g) for p, g in zip(pred, gold, strict=True))
    fn = sum(len(g - p) for p, g in zip(pred, gold, strict=True))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)


def fit_calibration(tagger: Tagger, texts: Sequence[str], gold: Sequence[Sequence[str]], *,
                    l2: float = 0.3, folds: int = 5, fitted_on: str = "") -> Calibration:
    """Fit the logistic combination on labelled messages; pick the threshold that maximises
    micro-F1 in an inner cross-validation over the same messages (never other data)."""
    contentless, feats, _, names = tagger.features(texts)
    live = [i for i, c in enumerate(contentless) if not c]
    golds = [set(gold[i]) for i in live]
    y = np.array([[1.0 if n in g else 0.0 for n in names] for g in golds])
    x = feats.astype(np.float64)
    fold_of = np.arange(len(live)) % folds
    probs = np.zeros_like(y)
    for k in range(folds):
        tr, te = fold_of != k, fold_of == k
        coef, b = fit_logistic(x[tr].reshape(-1, x.shape[2]), y[tr].reshape(-1), l2=l2)
        probs[te] = 1.0 / (1.0 + np.exp(-(x[te] @ coef + b)))
    all_gold = [set(g) for g in gold]
    best_t, best_f = 0.5, -1.0
    for t in np.arange(0.20, 0.71, 0.025):
        cal = Calibration("", FEATURES, (), 0.0, round(float(t), 3))
        pred: list[set[str]] = [set() for _ in texts]
        for row, i in enumerate(live):
            pred[i] = {names[j] for j in cal.accept(probs[row], tagger.max_tags)}
        f = micro_prf(pred, all_gold)[2]
        if f > best_f + 1e-9:
            best_t, best_f = round(float(t), 3), f
    coef, b = fit_logistic(x.reshape(-1, x.shape[2]), y.reshape(-1), l2=l2)
    return Calibration(embedder=tagger.embedder.name, features=FEATURES,
                       coef=tuple(float(c) for c in coef), intercept=b,
                       threshold=best_t, fitted_on=fitted_on, l2=l2,
                       extra={"inner_cv_f1": round(best_f, 4), "messages": len(texts)})
