"""The taxonomy the settings name reaches the recommender, not only the tagger (issue 13)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.services import Services, build_services
from nlp.embed import CachedEmbedder
from nlp.recommend import RecommendationResult
from nlp.taxonomy import default_taxonomy_path
from tests.catalog_sync.support import item
from tests.conftest import make_settings

CAMPING = "露营装备"
ASKED = "周末想带娃去山里搭帐篷过夜，要准备点啥"
ITEMS = [
    item("tent", title="四季双层防雨帐篷 3-4人", description="双层防雨，速开免搭，适合家庭出游。",
         category="户外/帐篷", tags=[CAMPING]),
    item("cream", title="积雪草修护霜", description="修护屏障，敏感肌可用。", tags=["敏感肌"]),
    item("puree", title="有机果泥 12袋", description="宝宝辅食，无添加。", tags=["辅食添加"]),
]


def _own_taxonomy(path: Path) -> Path:
    """Write the shipped taxonomy plus one new tag, with a sentence that says it."""
    doc = json.loads(default_taxonomy_path().read_text(encoding="utf-8"))
    doc["tags"].append({
        "tag": CAMPING, "industry": "outdoor", "keywords": ["帐篷", "天幕", "睡袋", "露营"],
        "description": "帐篷、天幕、睡袋、防潮垫等户外露营过夜要用的装备。",
        "examples": [ASKED, "想买个天幕和睡袋去营地过一晚"]})
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


@contextmanager
def _ask(tmp_path: Path, embedder: CachedEmbedder, **settings: object
         ) -> Iterator[tuple[Services, RecommendationResult]]:
    svc = build_services(make_settings(tmp_path / "data", **settings), embedder=embedder)
    try:
        svc.catalog.upsert(ITEMS)
        svc.index.refresh()
        yield svc, svc.recommender.for_text(ASKED, k=3)
    finally:
        svc.close()


@pytest.mark.model
def test_taxonomy_path_reaches_recommendations(tmp_path: Path,
                                               use_embedder: CachedEmbedder) -> None:
    with _ask(tmp_path / "shipped", use_embedder) as (svc, shipped):
        assert CAMPING not in svc.recommender.tags.names
        assert all(CAMPING not in r.reason for r in shipped.items)

    own = _own_taxonomy(tmp_path / "taxonomy.json")
    with _ask(tmp_path / "own", use_embedder, taxonomy_path=own) as (svc, custom):
        # One taxonomy, loaded once, behind both the tagger and the recommender.
        assert CAMPING in svc.tagger.taxonomy
        assert CAMPING in svc.recommender.tags.names
        tent = next(r for r in custom.items if r.id == "tent")
        assert tent.reason == f"因为你问到「{CAMPING}」相关的问题"
        assert tent == custom.items[0]
