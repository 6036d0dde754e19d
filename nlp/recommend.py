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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from models.catalog import CatalogItem
from nlp.embed import Embedder, Vectors
from nlp.index import VectorIndex
from nlp.signals import Signals
from nlp.taxonomy import Taxonomy

log = logging.getLogger("mingpian.recommend")

_EXTRA_TAGS_KEPT = 10_000  # vectors of tags outside the taxonomy; past this the cache starts over

Strategy = Literal["profile", "group", "provider_popular", "global_popular", "query"]


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


@dataclass(frozen=True)
class RecommendationResult:
    """Items best first, and which strategy produced them."""

    items: list[Recommendation]
    strategy: str


# -- what the recommender reads -----------------------------------------------------------
class ItemReader(Protocol):
    """Current catalog items by id (catalog.repo.CatalogRepo)."""

    def get_items(self, ids: Sequence[str]) -> dict[str, CatalogItem]:
        """Return the items that exist among ids."""
        ...


class TagWeightLike(Protocol):
    """nlp.profile.TagWeight as far as recommendations use it."""

    @property
    def tag(self) -> str: ...
    @property
    def weight(self) -> float: ...


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


@dataclass(frozen=True)
class _Scored:
    id: str
    score: float
    reason: str


# -- the recommender -----------------------------------------------------------------------------
class Recommender:
    """Recommendations from profiles, free text and popularity over the catalog index."""

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
        tag_threshold: float = 0.4,
        tag_boost: float = 0.5,
        full_text_weight: float = 0.7,
        top_tags: int = 5,
    ) -> None:
        self.index = index
        self.items = items
        self.embedder = embedder
        self.signals = signals
        self.tags = tags
        self.profiles = profiles
        self.candidates = candidates
        self.tag_threshold = tag_threshold
        self.tag_boost = tag_boost
        self.full_text_weight = full_text_weight
        self.top_tags = top_tags

    # -- public: users ------------------------------------------------------------------------
    def for_user(self, user_id: str, *, k: int = 10, provider_id: str | None = None,
                 kind: str | None = None, diversity: float = 0.3,
                 group_id: str | None = None) -> RecommendationResult:
        """Return up to k items for a user: profile, else group, else popular (strategy says)."""
        bought = self.signals.bought(user_id) if user_id else frozenset()
        profile = self._profile("user", user_id) if user_id else None
        plans: list[tuple[Strategy, Callable[[], list[_Scored]]]] = []
        if profile is not None and _usable(profile):
            plans.append(("profile", partial(
                self._from_profile, profile, k=k, provider_id=provider_id, kind=kind,
                exclude=bought, diversity=diversity, who="user")))
        # The groups a user posted in come most recent last; the newest says most.
        groups = ([group_id] if group_id else []) + list(reversed(profile.groups if profile
                                                                  else []))
        for g in dict.fromkeys(groups):
            gp = self._profile("group", g)
            if gp is not None and _usable(gp):
                plans.append(("group", partial(
                    self._from_profile, gp, k=k, provider_id=provider_id, kind=kind,
                    exclude=bought, diversity=diversity, who="group")))
                break
        if provider_id is not None:
            plans.append(("provider_popular", lambda: self._popular(
                provider_id, provider_id=provider_id, kind=kind, k=k, exclude=bought)))
        plans.append(("global_popular", lambda: self._popular(
            None, provider_id=provider_id, kind=kind, k=k, exclude=bought)))

        out: list[Recommendation] = []
        seen: set[str] = set(bought)
        strategy: Strategy | None = None
        for name, plan in plans:
            got = self._finish(plan(), need=k - len(out), provider_id=provider_id, kind=kind,
                               seen=seen)
            if got and strategy is None:
                strategy = name
            out += got
            if len(out) >= k:
                break
        return RecommendationResult(items=out[:k], strategy=strategy or plans[-1][0])

    # -- public: free text ------------------------------------------------------------------
    def for_text(self, text: str, *, k: int = 10, provider_id: str | None = None,
                 kind: str | None = None, user_id: str | None = None) -> RecommendationResult:
        """Return up to k items that answer a chat message or a search.

        ``score`` is 0..1-ish and comparable across queries: the bot answers unprompted
        only above its confidence threshold.
        """
        text = text.strip()
        if not text:
            return RecommendationResult(items=[], strategy="query")
        exclude = self.signals.bought(user_id) if user_id else frozenset()
        parts = clauses(text)
        q = self.embedder.encode([text, *parts])
        scored = self._score_text(text, parts, q, provider_id=provider_id, kind=kind,
                                  exclude=exclude, limit=max(3 * k, self.candidates))
        got = self._finish(scored, need=k, provider_id=provider_id, kind=kind,
                           seen=set(exclude))
        return RecommendationResult(items=got, strategy="query")

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

    def _candidates(self, queries: Vectors, tag_names: list[str], *, limit: int,
                    tag_limit: int, provider_id: str | None, kind: str | None,
                    exclude: frozenset[str]) -> tuple[list[str], Vectors] | None:
        """Return the candidate ids and their vectors: the index's nearest items to each
        query row, then items carrying one of the tags; None when there is none."""
        hits = self.index.search(queries, k=limit, provider_id=provider_id, kind=kind,
                                 exclude=exclude)
        cand: dict[str, None] = {h.id: None for row in hits for h in row}
        by_tag = self.index.with_tags(tag_names, provider_id=provider_id, kind=kind,
                                      limit=tag_limit) if tag_names else {}
        for tagged in by_tag.values():
            cand.update((i, None) for i in tagged if i not in exclude)
        vecs = self.index.vectors(list(cand))
        ids = [i for i in cand if i in vecs]
        if not ids:
            return None
        return ids, np.vstack([vecs[i] for i in ids])

    def _from_profile(self, profile: ProfileLike, *, k: int, provider_id: str | None,
                      kind: str | None, exclude: frozenset[str], diversity: float,
                      who: Literal["user", "group"]) -> list[_Scored]:
        top = [t for t in profile.tags if t.weight > 0][: self.top_tags]
        tag_names = [t.tag for t in top]
        weights = np.asarray([t.weight for t in top], dtype=np.float64)
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
        found = self._candidates(np.vstack(rows), tag_names, limit=max(3 * k, self.candidates),
                                 tag_limit=max(2 * k, 20), provider_id=provider_id,
                                 kind=kind, exclude=exclude)
        if found is None:
            return []
        ids, x = found
        parts: list[npt.NDArray[np.float64]] = []
        evidence: npt.NDArray[np.int64] | None = None
        if interest is not None:
            parts.append((x @ np.asarray(interest, dtype=np.float32)).astype(np.float64))
        if tag_vecs is not None:
            tau = self.tag_threshold
            affinity = np.clip((x @ tag_vecs.T - tau) / (1.0 - tau), 0.0, 1.0).astype(np.float64)
            # Carrying the tag is the strongest evidence there is.
            affinity[self.index.carries(ids, tag_names)] = 1.0
            weighted = affinity * weights[None, :]
            evidence = np.argmax(weighted, axis=1)
            parts.append(weighted.max(axis=1))
        score = np.mean(parts, axis=0)
        # Re-rank only the best few times k, and pick only the first k + 5 by MMR (spares for
        # the final check); the rest of the pool follows by score.
        pool = np.argsort(-score, kind="stable")[: max(4 * k, 20)]
        picked = mmr_order(score[pool], x[pool], diversity=diversity, limit=k + 5)
        rest = sorted(set(range(len(pool))) - set(picked))
        order = [int(pool[r]) for r in picked + rest]
        out: list[_Scored] = []
        for r in order:
            if score[r] <= 0:
                continue  # no evidence at all: leave the slot to the next strategy
            if evidence is not None and parts[-1][r] > 0:
                tag = tag_names[int(evidence[r])]
                reason = (f"因为你最近聊到「{tag}」" if who == "user"
                          else f"因为群里最近常聊「{tag}」")
            else:
                reason = ("根据你最近聊天的兴趣推荐" if who == "user"
                          else "根据群里最近的话题推荐")
            out.append(_Scored(ids[r], float(score[r]), reason))
        return out

    def _score_text(self, text: str, parts: list[str], q: Vectors, *,
                    provider_id: str | None, kind: str | None, exclude: frozenset[str],
                    limit: int) -> list[_Scored]:
        # Tags the message speaks about (by their example sentences), from any clause.
        tag_sims = (q @ self.tags.matrix.T).max(axis=0) if len(self.tags.names) else None
        strong: list[tuple[str, float]] = []
        if tag_sims is not None:
            for j in np.argsort(-tag_sims)[: self.top_tags]:
                if tag_sims[j] > self.tag_threshold:
                    strong.append((self.tags.names[int(j)], float(tag_sims[j])))
        strong_names = [t for t, _ in strong]
        found = self._candidates(q, strong_names, limit=limit, tag_limit=limit,
                                 provider_id=provider_id, kind=kind, exclude=exclude)
        if found is None:
            return []
        ids, x = found
        sims = (x @ q.T).astype(np.float64)  # (items, 1 + clauses)
        w = self.full_text_weight
        relevance = sims[:, 0] if not parts else w * sims[:, 0] + (1 - w) * sims[:, 1:].max(1)
        boost = np.zeros(len(ids))
        evidence: list[str | None] = [None] * len(ids)
        if strong:
            gains = self.tag_boost * (np.asarray([s for _, s in strong]) - self.tag_threshold)
            carried = self.index.carries(ids, strong_names) * gains[None, :]
            best = np.argmax(carried, axis=1)
            boost = carried[np.arange(len(ids)), best]
            evidence = [strong_names[int(b)] if g > 0 else None
                        for b, g in zip(best, boost, strict=True)]
        score = relevance + boost
        order = np.argsort(-score, kind="stable")[:limit]
        out: list[_Scored] = []
        for r in order:
            tag = evidence[r]
            if tag is not None:
                reason = f"因为你问到「{tag}」相关的问题"
            else:
                best = parts[int(np.argmax(sims[r, 1:]))] if parts else text
                reason = f"和你说的「{_snippet(best)}」最相关"
            out.append(_Scored(ids[r], float(score[r]), reason))
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
            items = self.items.get_items([s.id for s in chunk]) if chunk else {}
            for s in chunk:
                it = items.get(s.id)
                if it is None or s.id in seen or not it.is_available(provider_id):
                    continue
                if kind is not None and it.kind != kind:
                    continue
                seen.add(s.id)
                out.append(Recommendation(
                    id=it.id, kind=it.kind, title=it.title, score=round(s.score, 4),
                    price_cents=it.price_at(provider_id), url=it.url, reason=s.reason))
                if len(out) >= need:
                    break
        return out


def _usable(profile: ProfileLike) -> bool:
    return bool(profile.tags) or profile.interest is not None


def _snippet(text: str, limit: int = 12) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
