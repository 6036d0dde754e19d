"""Issue 17: a search's ranking is kept (RankedTexts) while the snapshots it was ranked on
serve. A repeated search answers exactly what ranking it again would, encodes nothing, and
still checks stock, price and purchases; a catalog change the index has taken in is never
answered from a ranking made before it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from catalog_sync.loader import demo_catalog_path
from models.catalog import CatalogItem
from nlp.recommend import RankedTexts, Recommender
from store.base import Store
from tests.catalog_sync.support import CountingEmbedder, build_recommender, item

DEMO = [CatalogItem.model_validate(json.loads(line))
        for line in demo_catalog_path().read_text(encoding="utf-8").splitlines() if line]
TEXTS = ["宝宝辅食怎么加", "晚上睡不好", "敏感肌用什么面霜", "车要保养了"]


@pytest.fixture
def rec(store: Store) -> Iterator[Recommender]:
    r: Recommender = build_recommender(store, CountingEmbedder(64), items=DEMO)
    yield r
    r.index.close()


def _fresh(rec: Recommender) -> Recommender:
    """The same recommender with no ranking kept: what ranking again answers."""
    rec.ranked_texts = RankedTexts(0)
    return rec


def _ask(rec: Recommender, text: str, **kw: object) -> list[tuple[str, float, str, int]]:
    res = rec.for_text(text, **kw)  # type: ignore[arg-type]
    return [(r.id, r.score, r.reason, r.price_cents) for r in res.items]


@pytest.mark.parametrize("kw", [{}, {"provider_id": "gz-01"}, {"kind": "course"},
                                {"k": 3, "user_id": "u1"}])
def test_a_repeated_search_answers_as_ranking_again_and_encodes_nothing(
        rec: Recommender, kw: dict[str, object]) -> None:
    rec.record_purchase("u1", "sku-10019")
    first = [_ask(rec, t, **kw) for t in TEXTS]
    emb = rec.embedder
    assert isinstance(emb, CountingEmbedder)
    encoded = len(emb.texts)
    again = [_ask(rec, t, **kw) for t in TEXTS]
    assert len(emb.texts) == encoded  # every one a kept ranking
    assert rec.ranked_texts.hits == len(TEXTS)
    assert again == first
    assert [_ask(_fresh(rec), t, **kw) for t in TEXTS] == first
    assert any(first)


def test_stock_price_and_purchases_are_read_on_every_request(rec: Recommender) -> None:
    """A change the index has not taken in yet (it lags the store) reaches a kept ranking:
    what went inactive or changed price since is not answered as it was; what the user
    bought since is left out (their purchases are part of what a ranking is kept for)."""
    before = rec.for_text("宝宝辅食怎么加", k=5).items
    assert len(before) == 5
    top, second, third = before[0].id, before[1].id, before[2].id
    repo = rec.items
    gone = repo.get_items([top])[top]
    repo.upsert([gone.model_copy(update={"active": False})])  # type: ignore[attr-defined]
    cheaper = repo.get_items([second])[second]
    repo.upsert([cheaper.model_copy(update={"price_cents": 1})])  # type: ignore[attr-defined]
    after = rec.for_text("宝宝辅食怎么加", k=5).items
    assert rec.ranked_texts.hits == 1  # the kept ranking (the index has not moved)
    assert top not in [r.id for r in after] and len(after) == 5
    assert [r.price_cents for r in after if r.id == second] == [1]
    rec.record_purchase("u1", third)
    assert third not in [r.id for r in rec.for_text("宝宝辅食怎么加", k=5, user_id="u1").items]


def test_a_catalog_change_the_index_took_in_is_ranked_anew(rec: Recommender) -> None:
    text = "婴儿防胀气奶瓶"
    before = _ask(rec, text, k=5)
    new = item("sku-new-bottle", title="婴儿防胀气奶瓶", description="婴儿防胀气奶瓶",
               tags=["辅食添加"], category="母婴/喂养")
    rec.items.upsert([new])  # type: ignore[attr-defined]
    assert rec.index.refresh()  # what the follower thread does within its poll interval
    after = _ask(rec, text, k=5)
    assert after[0][0] == "sku-new-bottle" and before[0][0] != "sku-new-bottle"
    assert after == _ask(_fresh(rec), text, k=5)


def test_at_most_size_rankings_are_kept_newest_used_last_out(rec: Recommender) -> None:
    rec.ranked_texts = kept = RankedTexts(2)
    for t in TEXTS[:3]:
        rec.for_text(t)
    rec.for_text(TEXTS[0])  # pushed out by the third
    assert (kept.hits, kept.misses) == (0, 4)
    rec.for_text(TEXTS[2])
    rec.for_text(TEXTS[0])
    assert (kept.hits, kept.misses) == (2, 4)


def test_a_scoring_knob_changed_on_a_live_recommender_ranks_anew(rec: Recommender) -> None:
    """bench_relevance tunes the knobs of one recommender between runs of the same texts."""
    before = _ask(rec, TEXTS[0])
    rec.full_text_weight, rec.tag_boost = 0.2, 2.0
    after = _ask(rec, TEXTS[0])
    assert after != before
    assert after == _ask(_fresh(rec), TEXTS[0])
    rec.ranked_texts = kept = RankedTexts(16)
    rec.for_text(TEXTS[0])
    rec.model = None  # raw scores, as bench_relevance asks for them: a setting like any
    raw = [(r.id, r.confidence) for r in rec.for_text(TEXTS[0]).items]
    assert (kept.hits, kept.misses) == (0, 2)
    assert raw == [(r.id, r.confidence) for r in _fresh(rec).for_text(TEXTS[0]).items]
