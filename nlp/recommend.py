"""Recommendations for a user (profile → group → popular) and for free text (bot, query API).

For a user: candidates come from the interest vector and the profile's top tags (their
vectors, and items carrying the tag) → filters (active; available at the provider with
stock > 0; kind; not bought) → score → MMR re-ranking for diversity → a Chinese reason that
names the evidence. Every item is checked once more against the store before it is returned,
so a lagging index can never leak an inactive, sold-out or bought item.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from models.catalog import CatalogItem, Listing
from nlp.embed import Embedder, Vectors
from nlp.index import Candidates, VectorIndex
from nlp.lexical import LexicalIndex, QueryTerms, saturate
from nlp.relevance import TEXT_FEATURES, RelevanceModel, load_model
from nlp.signals import Signals
from nlp.taxonomy import Taxonomy

log = logging.getLogger("mingpian.recommend")

_EXTRA_TAGS_KEPT = 10_000  # vectors of tags outside the taxonomy; past this the cache starts over

Strategy = Literal["profile", "group", "provider_popular", "global_popular", "query",
                   "similar"]


@dataclass(frozen=True)
class Recommendation:
    """One recommended item (CONTRACTS §5)."""

    id: str
    kind: str
    title: str
    score: float
    price_cents: int
    url: str
    reason: str
    confidence: float = 0.0  # calibrated: the chance that the item answers the need (0..1)


@dataclass(frozen=True)
class RecommendationResult:
    """Items best first, which strategy produced them, and whether mingpian is confident
    that they answer (false for chit-chat and off-topic text: then items may be empty)."""

    items: list[Recommendation]
    strategy: str
    confident: bool = True


# -- what the recommender reads -----------------------------------------------------------
class ItemReader(Protocol):
    """Current catalog items by id (catalog.repo.CatalogRepo)."""

    def get_items(self, ids: Sequence[str]) -> dict[str, CatalogItem]:
        """Return the items that exist among ids."""
        ...

    def get_listings(self, ids: Sequence[str]) -> dict[str, Listing]:
        """Return the listings (what an answer shows) of the items that exist among ids."""
        ...


class TagWeightLike(Protocol):
    """nlp.profile.TagWeight as far as recommendations use it."""

    @property
    def tag(self) -> str: ...
    @property
    def weight(self) -> float: ...
    @property
    def last_seen(self) -> int: ...


class ProfileLike(Protocol):
    """nlp.profile.Profile as far as recommendations use it."""

    @property
    def tags(self) -> Sequence[TagWeightLike]: ...
    @property
    def interest(self) -> npt.NDArray[np.float32] | None: ...
    @property
    def groups(self) -> Sequence[str]: ...


class ProfileSource(Protocol):
    """nlp.profile.ProfileRepo as far as recommendations use it."""

    def get(self, kind: Literal["user", "group"], id: str) -> ProfileLike | None:
        """Return the decayed profile or None."""
        ...


# -- tag vectors ----------------------------------------------------------------------------
def taxonomy_prototypes(taxonomy: Taxonomy | None = None) -> dict[str, list[str]]:
    """Return tag → texts that say it (:meth:`Taxonomy.prototypes`); the shipped taxonomy
    and examples when taxonomy is None."""
    return (taxonomy if taxonomy is not None else Taxonomy.load()).prototypes()


class TagSpace:
    """One vector per interest tag: the centroid of its description and example sentences
    (how people say it without the keyword). Unknown tags are embedded by name, on demand."""

    def __init__(self, embedder: Embedder, prototypes: dict[str, list[str]]) -> None:
        self.embedder = embedder
        self.names = list(prototypes)
        texts = [s for n in self.names for s in prototypes[n]]
        owner = np.repeat(np.arange(len(self.names)), [len(prototypes[n]) for n in self.names])
        vecs = embedder.encode(texts) if texts else np.zeros((0, embedder.dim), np.float32)
        m = np.zeros((len(self.names), embedder.dim), dtype=np.float32)
        np.add.at(m, owner, vecs)
        norms = np.linalg.norm(m, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        self.matrix: Vectors = np.ascontiguousarray(m / norms, dtype=np.float32)
        self._row = {n: i for i, n in enumerate(self.names)}
        self._extra: dict[str, Vectors] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, embedder: Embedder, taxonomy: Taxonomy) -> TagSpace:
        """Return the tag space of a taxonomy (its tags as they are now)."""
        return cls(embedder, taxonomy.prototypes())

    @classmethod
    def default(cls, embedder: Embedder) -> TagSpace:
        """Return the tag space of the shipped taxonomy and examples."""
        return cls.of(embedder, Taxonomy.load())

    def vectors(self, tags: Sequence[str]) -> Vectors:
        """Return one row per tag."""
        missing = [t for t in tags if t not in self._row and t not in self._extra]
        if missing:
            vecs = self.embedder.encode(missing)
            with self._lock:
                if len(self._extra) > _EXTRA_TAGS_KEPT:
                    self._extra.clear()
                self._extra.update(zip(missing, vecs, strict=True))
        out = np.zeros((len(tags), self.embedder.dim), dtype=np.float32)
        for i, t in enumerate(tags):
            r = self._row.get(t)
            out[i] = self.matrix[r] if r is not None else self._extra[t]
        return out


# -- ranking helpers --------------------------------------------------------------------------
def mmr_order(scores: npt.NDArray[np.float64], vecs: Vectors, *, diversity: float,
              limit: int) -> list[int]:
    """Return up to limit indices by maximal marginal relevance.

    Each pick maximises (1 − diversity)·score − diversity·(max similarity to the picks so
    far); diversity 0 is plain relevance order.
    """
    n = len(scores)
    if n == 0:
        return []
    lam = 1.0 - min(max(diversity, 0.0), 1.0)
    if lam >= 1.0:
        return [int(i) for i in np.argsort(-scores, kind="stable")[:limit]]
    sims = vecs @ vecs.T
    taken = np.zeros(n, dtype=np.bool_)
    nearest = np.zeros(n, dtype=np.float64)
    order: list[int] = []
    for _ in range(min(limit, n)):
        value = lam * scores - (1.0 - lam) * nearest
        value[taken] = -np.inf
        i = int(np.argmax(value))
        order.append(i)
        taken[i] = True
        nearest = np.maximum(nearest, sims[i])
    return order


_CLAUSE = re.compile(r"[，,。！？!?；;～~…\s]+")
_MIN_CLAUSE = 2  # characters: a lone character says nothing on its own


def clauses(text: str, *, max_clauses: int = 6) -> list[str]:
    """Return the clauses of a chat message worth embedding on their own (≥ 2 characters)."""
    parts = [p for p in _CLAUSE.split(text) if len(p) >= _MIN_CLAUSE]
    return parts[:max_clauses] if len(parts) > 1 else []


@dataclass(frozen=True, slots=True)
class _Scored:
    """A ranked candidate before the final check (RankedTexts keeps thousands of them)."""

    id: str
    score: float
    reason: str
    confidence: float = 0.0


@dataclass(frozen=True)
class TextCandidates:
    """Candidates for a free text and their relevance features (TEXT_FEATURES columns)."""

    found: Candidates  # ids, vectors and tag marks from the index
    features: npt.NDArray[np.float64]
    tags: list[str]  # the tags the text speaks about
    evidence: npt.NDArray[np.int64]  # per item, the one of tags it carries (-1: none)
    clauses: list[str]  # the text's clauses (or the text itself)
    best_clause: npt.NDArray[np.int64]  # per item, the clause it matches best
    # Indices, not strings: a query has hundreds of candidates and names a dozen (issue 17).

    @property
    def ids(self) -> list[str]:
        """Every candidate's id, in order."""
        return self.found.ids

    def tag_of(self, r: int) -> str | None:
        """Return the tag that is candidate r's evidence, if any."""
        j = int(self.evidence[r])
        return self.tags[j] if j >= 0 else None

    def clause_of(self, r: int) -> str:
        """Return the clause (or the text) candidate r matches best."""
        return self.clauses[int(self.best_clause[r])]


def in_stock(item: CatalogItem | Listing, provider_id: str | None) -> bool:
    """Return whether the item may be recommended: active and in stock at the provider, or,
    with no provider, somewhere (an item listed only with stock 0 is sold out everywhere)."""
    if not item.is_available(provider_id):
        return False
    return provider_id is not None or item.sold_somewhere()


class RankedTexts:
    """The rankings of recent texts (a mall's search box repeats its searches), each valid
    only while the catalog snapshots it was ranked on are in service: the vector index's
    and the lexical index's. A catalog change the index takes in (or a compaction) publishes
    new snapshots, and then every kept ranking is dropped (issue 17).

    What is kept is the ranking before the final check: availability, price and the user's
    purchases are read again on every request (Recommender._finish). The snapshots are
    held weakly, so a replaced one is freed as it would be without the cache."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, list[_Scored]] = OrderedDict()
        self._at: tuple[weakref.ref[object] | None, ...] = ()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, stamp: tuple[object | None, ...]) -> list[_Scored] | None:
        """Return the ranking kept for key if it was ranked on the snapshots of stamp."""
        with self._lock:
            if not self._is_at(stamp):
                self._entries.clear()
                self._at = tuple(weakref.ref(s) if s is not None else None for s in stamp)
            got = self._entries.get(key)
            if got is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return got

    def put(self, key: Hashable, stamp: tuple[object | None, ...],
            ranked: list[_Scored]) -> None:
        """Keep ranked for key, ranked on stamp (read before the ranking began); not if the
        snapshots moved on meanwhile."""
        if self.size <= 0:
            return
        with self._lock:
            if not self._is_at(stamp):
                return
            self._entries[key] = ranked
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def _is_at(self, stamp: tuple[object | None, ...]) -> bool:
        return len(self._at) == len(stamp) and all(
            (r() if r is not None else None) is s for r, s in zip(self._at, stamp, strict=True))


# -- the recommender -----------------------------------------------------------------------------
class Recommender:
    """Recommendations from profiles, free text and popularity over the catalog index."""

    _settings_changed = 0  # attributes set so far (__setattr__)

    def __init__(  # noqa: PLR0913  keyword-only: its collaborators and scoring knobs, each named
        self,
        *,
        index: VectorIndex,
        items: ItemReader,
        embedder: Embedder,
        signals: Signals,
        tags: TagSpace,
        profiles: ProfileSource | None = None,
        candidates: int = 50,
        tag_threshold: float | None = None,
        tag_boost: float | None = None,
        full_text_weight: float = 0.7,
        top_tags: int = 5,
        lexical: LexicalIndex | None = None,
        lexical_weight: float | None = None,
        coverage_weight: float | None = None,
        model: RelevanceModel | Literal["auto"] | None = "auto",
        recency_half_life_days: float | None = None,
        interest_weight: float = 0.5,
        recent_head: int = 3,
        empty_when_unsure: bool = False,
        ranked_texts: int = 1024,
    ) -> None:
        self.index = index
        self.items = items
        self.embedder = embedder
        self.signals = signals
        self.tags = tags
        self.profiles = profiles
        self.candidates = candidates
        self.full_text_weight = full_text_weight
        self.top_tags = top_tags
        # Hybrid retrieval: BM25 over the catalog's words beside the dense index.
        self.lexical = lexical
        # Calibrated confidence (nlp/relevance.py); None: the score, clipped to 0..1.
        self.model = load_model(embedder.name) if model == "auto" else model
        # Fusion weights (None: as chosen with the model, bench/bench_relevance.py --fit):
        # of saturated BM25, and of the share of the text's words the item contains.
        chosen = self.model.extra if self.model is not None else {}
        self.lexical_weight = (float(chosen.get("lexical_weight", 0.0)) if lexical_weight is None
                               else lexical_weight)
        self.coverage_weight = (float(chosen.get("coverage_weight", 0.0))
                                if coverage_weight is None else coverage_weight)
        # Tag re-ranking (issue 5): a tag counts past this similarity, and boosts the items
        # carrying it by this much per unit above it. None: as fitted for the embedder (its
        # model's extra), else issue 5's 0.4 / 0.5, chosen for USE's wide similarity spread.
        self.tag_threshold = (float(chosen.get("tag_threshold", 0.4)) if tag_threshold is None
                              else tag_threshold)
        self.tag_boost = float(chosen.get("tag_boost", 0.5)) if tag_boost is None else tag_boost
        # A profile tag counts at full weight when it is as recent as the member's newest
        # evidence, half when it was last seen this many days before (None: no recency).
        self.recency_half_life_days = recency_half_life_days
        self.interest_weight = interest_weight  # the interest vector's share of a profile score
        # Profile answers lead with up to this many items of the member's latest topic.
        self.recent_head = recent_head
        self.empty_when_unsure = empty_when_unsure  # no items at all when not confident
        # Rankings of recent searches (0: none kept), see RankedTexts.
        self.ranked_texts = RankedTexts(ranked_texts)

    def __setattr__(self, name: str, value: object) -> None:
        """Set an attribute, and count it: every setting of a recommender (its scoring
        knobs, model, tag space, lexical index) may change how a text ranks, and
        bench_relevance, the wiring and tests set them on a live one. Rankings kept from
        before a change are keyed by the old count and never answer again (RankedTexts)."""
        object.__setattr__(self, name, value)
        object.__setattr__(self, "_settings_changed", self._settings_changed + 1)

    # -- public: users ------------------------------------------------------------------------
    def for_user(self, user_id: str, *, k: int = 10, provider_id: str | None = None,
                 kind: str | None = None, diversity: float = 0.3,
                 group_id: str | None = None,
                 min_confidence: float = 0.0) -> RecommendationResult:
        """Return up to k items for a user: profile, else group, else popular (strategy says).

        ``confident`` is true when a profile (the user's or the group's) produced items and
        the best reaches the model's profile threshold; popular items are never confident."""
        bought = self.signals.bought(user_id) if user_id else frozenset()
        profile = self._profile("user", user_id) if user_id else None
        # The groups a user posted in come most recent last; the newest says most.
        groups = ([group_id] if group_id else []) + list(reversed(profile.groups if profile
                                                                  else []))

        def plans() -> Iterator[tuple[Strategy, Callable[[], list[_Scored]]]]:
            # Lazily: a page view that the profile fills reads no group profile.
            if profile is not None and _usable(profile):
                yield "profile", partial(
                    self._from_profile, profile, k=k, provider_id=provider_id, kind=kind,
                    exclude=bought, diversity=diversity, who="user")
            for g in dict.fromkeys(groups):
                gp = self._profile("group", g)
                if gp is not None and _usable(gp):
                    yield "group", partial(
                        self._from_profile, gp, k=k, provider_id=provider_id, kind=kind,
                        exclude=bought, diversity=diversity, who="group")
                    break
            if provider_id is not None:
                yield "provider_popular", lambda: self._popular(
                    provider_id, provider_id=provider_id, kind=kind, k=k, exclude=bought)
            yield "global_popular", lambda: self._popular(
                None, provider_id=provider_id, kind=kind, k=k, exclude=bought)

        out: list[Recommendation] = []
        seen: set[str] = set(bought)
        strategy: Strategy | None = None
        for name, plan in plans():
            got = [r for r in self._finish(plan(), need=k - len(out), provider_id=provider_id,
                                           kind=kind, seen=seen)
                   if r.confidence >= min_confidence]
            if got and strategy is None:
                strategy = name
            out += got
            if len(out) >= k:
                break
        threshold = self.model.profile_confident if self.model is not None else 0.0
        confident = (strategy in ("profile", "group") and bool(out)
                     and out[0].confidence >= threshold)
        return RecommendationResult(items=out[:k], strategy=strategy or "global_popular",
                                    confident=confident)

    # -- public: free text ------------------------------------------------------------------
    def for_text(self, text: str, *, k: int = 10, provider_id: str | None = None,
                 kind: str | None = None, user_id: str | None = None,
                 min_confidence: float = 0.0) -> RecommendationResult:
        """Return up to k items that answer a chat message or a search.

        Each item's ``confidence`` is calibrated (nlp/relevance.py); ``confident`` says
        whether the best one reaches the model's threshold (chit-chat does not). Items
        under ``min_confidence`` are left out; with ``empty_when_unsure`` an answer that is
        not confident has no items.
        """
        text = text.strip()
        if not text:
            return RecommendationResult(items=[], strategy="query", confident=False)
        exclude = self.signals.bought(user_id) if user_id else frozenset()
        limit = max(3 * k, self.candidates)
        key = (text, provider_id, kind, exclude, limit, self._settings_changed)
        stamp = (self.index.snapshot,
                 self.lexical.snapshot if self.lexical is not None else None)
        scored = self.ranked_texts.get(key, stamp)
        if scored is None:
            parts = clauses(text)
            q = self.embedder.encode([text, *parts])
            scored = self._score_text(text, parts, q, provider_id=provider_id, kind=kind,
                                      exclude=exclude, limit=limit)
            self.ranked_texts.put(key, stamp, scored)
        got = self._finish(scored, need=k, provider_id=provider_id, kind=kind,
                           seen=set(exclude))
        return self._answer(got, "query", min_confidence=min_confidence)

    def similar(self, item_id: str, *, k: int = 10, provider_id: str | None = None,
                kind: str | None = None, min_confidence: float = 0.0
                ) -> RecommendationResult | None:
        """Return up to k items like this one (its vector and its title's words, the same
        features and model as a free text); None when the item is not indexed."""
        vec = self.index.vectors([item_id]).get(item_id)
        if vec is None:
            return None
        items = self.items.get_items([item_id])
        it = items.get(item_id)
        text = it.title if it is not None else ""
        q = np.asarray(vec, dtype=np.float32).reshape(1, -1)
        scored = self._score_text(text, [], q, provider_id=provider_id, kind=kind,
                                  exclude=frozenset({item_id}),
                                  limit=max(3 * k, self.candidates), similar=True)
        got = self._finish(scored, need=k, provider_id=provider_id, kind=kind,
                           seen={item_id})
        return self._answer(got, "similar", min_confidence=min_confidence)

    def _answer(self, got: list[Recommendation], strategy: str, *,
                min_confidence: float) -> RecommendationResult:
        threshold = self.model.confident if self.model is not None else 0.0
        confident = bool(got) and got[0].confidence >= threshold
        items = [r for r in got if r.confidence >= min_confidence]
        if self.empty_when_unsure and not confident:
            items = []
        return RecommendationResult(items=items, strategy=strategy, confident=confident)

    # -- public: signals ------------------------------------------------------------------
    def record_view(
        self, item_id: str, *, provider_id: str | None = None,
        user_id: str | None = None,  # noqa: ARG002  callers pass it; views are not per user
    ) -> None:
        """Count a view of an item (popularity, overall and at the provider)."""
        self.signals.record("view", [item_id], provider_id=provider_id)

    def record_click(
        self, item_id: str, *, provider_id: str | None = None,
        user_id: str | None = None,  # noqa: ARG002  callers pass it; clicks are not per user
    ) -> None:
        """Count a click on an item."""
        self.signals.record("click", [item_id], provider_id=provider_id)

    def record_order(self, item_ids: str | Sequence[str], *, user_id: str | None = None,
                     provider_id: str | None = None, ts: int | None = None) -> None:
        """Count an order of these items; the buyer never gets them recommended again."""
        ids = [item_ids] if isinstance(item_ids, str) else list(item_ids)
        self.signals.record("order", ids, provider_id=provider_id)
        if user_id:
            self.signals.record_purchases(user_id, ids, ts=ts)

    def record_purchase(self, user_id: str, item_id: str | Sequence[str], *,
                        ts: int | None = None) -> None:
        """Remember that the user bought the item(s); they are never recommended to them."""
        ids = [item_id] if isinstance(item_id, str) else list(item_id)
        self.signals.record_purchases(user_id, ids, ts=ts)

    def bought(self, user_id: str) -> frozenset[str]:
        """Return the items the user bought."""
        return self.signals.bought(user_id)

    def forget_user(self, user_id: str) -> None:
        """Erase the user's purchases (PIPL erasure)."""
        self.signals.forget_user(user_id)

    # -- strategies ------------------------------------------------------------------------
    def _profile(self, kind: Literal["user", "group"], pid: str) -> ProfileLike | None:
        if self.profiles is None:
            return None
        return self.profiles.get(kind, pid)

    def _from_profile(self, profile: ProfileLike, *, k: int, provider_id: str | None,
                      kind: str | None, exclude: frozenset[str], diversity: float,
                      who: Literal["user", "group"]) -> list[_Scored]:
        top = self._recent_tags(profile)
        tag_names = [t for t, _, _ in top]
        current = np.asarray([c for _, _, c in top], dtype=np.bool_)
        weights = np.asarray([w for _, w, _ in top], dtype=np.float64)
        if len(weights):
            weights = weights / weights.max()
        interest = profile.interest
        rows: list[Vectors] = []
        if interest is not None:
            rows.append(np.asarray(interest, dtype=np.float32).reshape(1, -1))
        tag_vecs = self.tags.vectors(tag_names) if tag_names else None
        if tag_vecs is not None:
            # One query for all tags (their weighted centroid) keeps a page view to two
            # index probes; items that carry a tag join below whatever their vector.
            centroid = (weights[:, None] * tag_vecs).sum(axis=0)
            rows.append((centroid / max(float(np.linalg.norm(centroid)), 1e-9))
                        .astype(np.float32)[None, :])
        if not rows:
            return []
        found = self.index.candidates(np.vstack(rows), k=max(3 * k, self.candidates),
                                      tags=tag_names, tag_limit=max(2 * k, 20),
                                      provider_id=provider_id, kind=kind, exclude=exclude)
        if found is None:
            return []
        x = found.x
        parts: list[npt.NDArray[np.float64]] = []
        shares: list[float] = []
        evidence: npt.NDArray[np.int64] | None = None
        if interest is not None:
            parts.append((x @ np.asarray(interest, dtype=np.float32)).astype(np.float64))
            shares.append(self.interest_weight if tag_vecs is not None else 1.0)
        if tag_vecs is not None:
            tau = self.tag_threshold
            affinity = np.clip((x @ tag_vecs.T - tau) / (1.0 - tau), 0.0, 1.0).astype(np.float64)
            # Carrying the tag is the strongest evidence there is.
            affinity[found.carries] = 1.0
            weighted = affinity * weights[None, :]
            evidence = np.argmax(weighted, axis=1)
            parts.append(weighted.max(axis=1))
            shares.append(1.0 - self.interest_weight if interest is not None else 1.0)
        score = np.average(parts, axis=0, weights=shares)
        conf = (self.model.profile_probability(score) if self.model is not None
                else np.clip(score, 0.0, 1.0))
        on_topic = None
        if self.recent_head and evidence is not None and not current.all():
            on_topic = (parts[-1] > 0) & current[evidence]
        order = self._profile_order(score, x, on_topic, k=k, diversity=diversity)
        ids = found.ids_at(np.asarray(order, dtype=np.int64))  # the pool's, not every one
        out: list[_Scored] = []
        for r, item_id in zip(order, ids, strict=True):
            if score[r] <= 0:
                continue  # no evidence at all: leave the slot to the next strategy
            if evidence is not None and parts[-1][r] > 0:
                tag = tag_names[int(evidence[r])]
                reason = (f"因为你最近聊到「{tag}」" if who == "user"
                          else f"因为群里最近常聊「{tag}」")
            else:
                reason = ("根据你最近聊天的兴趣推荐" if who == "user"
                          else "根据群里最近的话题推荐")
            out.append(_Scored(item_id, float(score[r]), reason, float(conf[r])))
        return out

    def _profile_order(self, score: npt.NDArray[np.float64], x: Vectors,
                       on_topic: npt.NDArray[np.bool_] | None, *, k: int,
                       diversity: float) -> list[int]:
        """Return candidate positions in answer order. Only the best few times k are
        re-ranked; the newest topic first: the best items evidenced by a tag of the
        member's latest day (on_topic) lead, since diversity would otherwise pull an
        older topic up; MMR picks the next k + 5 (spares for the final check); the rest of
        the pool follows by score."""
        pool = np.argsort(-score, kind="stable")[: max(4 * k, 20)]
        head: list[int] = []
        if on_topic is not None:
            head = [int(r) for r in np.flatnonzero(on_topic[pool])[: self.recent_head]]
        taken = set(head)
        others = np.asarray([r for r in range(len(pool)) if r not in taken], dtype=np.int64)
        picked = [int(others[i]) for i in mmr_order(score[pool][others], x[pool][others],
                                                      diversity=diversity, limit=k + 5)]
        rest = sorted(set(range(len(pool))) - set(picked) - taken)
        return [int(pool[r]) for r in head + picked + rest]

    def _recent_tags(self, profile: ProfileLike) -> list[tuple[str, float, bool]]:
        """Return the profile's top tags: (tag, weight, current), each weight weighed by how
        recently the member showed the tag (relative to their newest evidence), current
        when it was shown within a day of it. A member who moved on sees the new topic
        first, the old one lower."""
        tags = [t for t in profile.tags if t.weight > 0]
        if not tags:
            return []
        weights = np.asarray([t.weight for t in tags], dtype=np.float64)
        seen = np.asarray([getattr(t, "last_seen", 0) or 0 for t in tags], dtype=np.float64)
        lag = (seen.max() - np.where(seen > 0, seen, seen.max())) / 86_400.0
        if self.recency_half_life_days:
            weights = weights * np.power(2.0, -lag / self.recency_half_life_days)
        order = np.argsort(-weights, kind="stable")[: self.top_tags]
        return [(tags[int(i)].tag, float(weights[int(i)]), bool(lag[int(i)] <= 1.0))
                for i in order]

    def text_candidates(self, text: str, parts: list[str], q: Vectors, *,
                        provider_id: str | None, kind: str | None, exclude: frozenset[str],
                        limit: int) -> TextCandidates | None:
        """Return the candidates for a text (dense neighbours of the text and its clauses,
        items carrying a tag it speaks about, BM25's best) with their relevance features."""
        # Tags the message speaks about (by their example sentences), from any clause.
        tag_sims = (q @ self.tags.matrix.T).max(axis=0) if len(self.tags.names) else None
        strong: list[tuple[str, float]] = []
        if tag_sims is not None:
            for j in np.argsort(-tag_sims)[: self.top_tags]:
                if tag_sims[j] > self.tag_threshold:
                    strong.append((self.tags.names[int(j)], float(tag_sims[j])))
        strong_names = [t for t, _ in strong]
        qt = self._query_terms(text)
        lex = ([i for i, _ in self.lexical.search(qt, k=limit)]
               if qt is not None and self.lexical is not None else [])
        found = self.index.candidates(q, k=limit, tags=strong_names, tag_limit=limit,
                                      provider_id=provider_id, kind=kind, exclude=exclude,
                                      extra=lex)
        if found is None:
            return None
        x = found.x
        n = len(found)
        sims = (x @ q.T).astype(np.float64)  # (items, 1 + clauses)
        dense = sims[:, 0]
        clause = sims[:, 1:].max(axis=1) if parts else dense
        if qt is not None and self.lexical is not None:
            bm25, cover = self.lexical.score(qt, found.ids)
        else:
            bm25 = cover = np.zeros(n, dtype=np.float32)
        tag_ev = np.zeros(n)
        evidence = np.full(n, -1, dtype=np.int64)
        if strong:
            gains = np.asarray([s for _, s in strong]) - self.tag_threshold
            carried = found.carries * gains[None, :]
            best = np.argmax(carried, axis=1)
            tag_ev = carried[np.arange(n), best]
            evidence = np.where(tag_ev > 0, best, -1)
        feats = np.column_stack([dense, clause, saturate(bm25), cover.astype(np.float64),
                                 tag_ev, dense - dense.max(), np.zeros(n)])
        feats[:, -1] = self.fuse(feats)
        assert feats.shape[1] == len(TEXT_FEATURES)
        best_clause = (np.argmax(sims[:, 1:], axis=1) if parts
                       else np.zeros(n, dtype=np.int64))
        return TextCandidates(found, feats, strong_names, evidence, parts or [text], best_clause)

    def fuse(self, feats: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Return the ranking score of candidates from their TEXT_FEATURES columns: dense
        similarity of the text (and its best clause), the tag boost (issue 5), plus BM25
        and word coverage weighted by lexical_weight and coverage_weight."""
        w = self.full_text_weight
        return np.asarray(w * feats[:, 0] + (1 - w) * feats[:, 1] + self.tag_boost * feats[:, 4]
                          + self.lexical_weight * feats[:, 2]
                          + self.coverage_weight * feats[:, 3], dtype=np.float64)

    def _query_terms(self, text: str) -> QueryTerms | None:
        if (self.lexical is None or not len(self.lexical) or not text
                or not (self.lexical_weight or self.coverage_weight)):
            return None  # no lexical index, or BM25 earns nothing in the fused score
        qt = self.lexical.terms(text)
        return qt if qt.tokens else None

    def _score_text(self, text: str, parts: list[str], q: Vectors, *,
                    provider_id: str | None, kind: str | None, exclude: frozenset[str],
                    limit: int, similar: bool = False) -> list[_Scored]:
        cands = self.text_candidates(text, parts, q, provider_id=provider_id, kind=kind,
                                     exclude=exclude, limit=limit)
        if cands is None:
            return []
        f = cands.features
        score = f[:, -1]
        conf = (self.model.text_probability(f) if self.model is not None
                else np.clip(score, 0.0, 1.0))
        order = np.argsort(-score, kind="stable")[:limit]
        ids = cands.found.ids_at(order)  # only those that can be answered with
        out: list[_Scored] = []
        for r, item_id in zip(order, ids, strict=True):
            tag = cands.tag_of(r)
            if similar:
                reason = f"和「{_snippet(text)}」相似"
            elif tag is not None:
                reason = f"因为你问到「{tag}」相关的问题"
            else:
                reason = f"和你说的「{_snippet(cands.clause_of(r))}」最相关"
            out.append(_Scored(item_id, float(score[r]), reason, float(conf[r])))
        return out

    def _popular(self, scope: str | None, *, provider_id: str | None, kind: str | None,
                 k: int, exclude: frozenset[str]) -> list[_Scored]:
        ranked = self.signals.popular(scope)
        top = ranked[0][1] if ranked else 0
        counts = dict(ranked)
        want = 3 * k + min(len(exclude), 500)
        ids: list[str] = []
        for start in range(0, len(ranked), 500):
            chunk = [i for i, _ in ranked[start : start + 500] if i not in exclude]
            ids += self.index.eligible(chunk, provider_id=provider_id, kind=kind)
            if len(ids) >= want:
                break
        reason = "本店热销" if scope is not None else "大家都在买"
        out = [_Scored(i, counts[i] / top if top else 0.0, reason) for i in ids[:want]]
        if scope is None and len(out) < want:
            # A new catalog has no popularity yet: offer what there is.
            have = set(ids) | exclude
            for i in self.index.some(provider_id=provider_id, kind=kind, limit=want + len(have)):
                if i not in have:
                    out.append(_Scored(i, 0.0, "为你精选"))
                if len(out) >= want:
                    break
        return out

    # -- final check against the store ----------------------------------------------------
    def _finish(self, ranked: list[_Scored], *, need: int, provider_id: str | None,
                kind: str | None, seen: set[str]) -> list[Recommendation]:
        """Return up to need items from ranked that the store confirms are recommendable."""
        out: list[Recommendation] = []
        pos = 0
        while len(out) < need and pos < len(ranked):
            chunk = [s for s in ranked[pos : pos + need - len(out) + 4] if s.id not in seen]
            pos += need - len(out) + 4
            items = self.items.get_listings([s.id for s in chunk]) if chunk else {}
            for s in chunk:
                it = items.get(s.id)
                if it is None or s.id in seen or not in_stock(it, provider_id):
                    continue
                if kind is not None and it.kind != kind:
                    continue
                seen.add(s.id)
                out.append(Recommendation(
                    id=it.id, kind=it.kind, title=it.title, score=round(s.score, 4),
                    price_cents=it.price_at(provider_id), url=it.url, reason=s.reason,
                    confidence=round(s.confidence, 4)))
                if len(out) >= need:
                    break
        return out


def _usable(profile: ProfileLike) -> bool:
    return bool(profile.tags) or profile.interest is not None


def _snippet(text: str, limit: int = 12) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
