"""The end-to-end check every packaged embedder back-end passes (issue 16): it tags chat
with its own calibration, indexes the demo catalog and recommends — a profile answer for a
member who talked about weaning, a confident answer to an eczema question, and no confident
answer to chit-chat."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from catalog.repo import CatalogRepo
from catalog_sync.loader import demo_catalog_path, import_rows, read_jsonl
from models.messages import ChatMessage
from nlp.embed import CachedEmbedder
from nlp.index import VectorIndex
from nlp.profile import ProfileRepo
from nlp.recommend import Recommender, TagSpace
from nlp.relevance import load_model
from nlp.signals import Signals
from nlp.tagging import Tagger, load_calibration
from nlp.taxonomy import Taxonomy
from store.sqlite import SQLiteStore


def tags_indexes_and_recommends(emb: CachedEmbedder, spec: str, *, user: str,
                                check: Callable[[Recommender], None] | None = None) -> None:
    """Run the check with emb (loaded from the setting spec); check(rec) adds its own."""
    # Its own calibrations, not the ones fitted for USE.
    assert load_calibration(spec).embedder == spec
    model = load_model(spec)
    assert model is not None and model.embedder == spec
    taxonomy = Taxonomy.load()
    tagger = Tagger(taxonomy=taxonomy, embedder=emb)
    assert "湿疹" in {h.tag for h in tagger.tag("宝宝脸上起了好多湿疹，红红的还痒").tags}
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "e2e.db")
        index: VectorIndex | None = None
        try:
            repo = CatalogRepo(store, embedder=emb)
            assert not import_rows(repo, read_jsonl(demo_catalog_path())).errors
            index = VectorIndex(repo, dim=emb.dim)
            index.load()
            now = 1_790_000_000 + 3 * 86_400
            profiles = ProfileRepo(store, half_life_days=30.0, clock=lambda: now)
            rec = Recommender(index=index, items=repo, embedder=emb, signals=Signals(store),
                              tags=TagSpace.of(emb, taxonomy), profiles=profiles)
            if check is not None:
                check(rec)
            texts = ["娃半岁了，想开始加辅食", "第一口吃米粉还是蛋黄啊", "辅食要不要放盐"]
            msgs = [ChatMessage(msg_id=f"m{i}", user_id=user, text=t,
                                ts=1_790_000_000 + i * 86_400) for i, t in enumerate(texts)]
            profiles.apply_many(list(zip(msgs, tagger.tag_batch(texts), strict=True)))
            res = rec.for_user(user, k=5)
            assert res.strategy == "profile" and res.confident
            items = repo.get_items([r.id for r in res.items[:3]])
            assert any("辅食添加" in items[i].tags for i in items)
            q = rec.for_text("宝宝湿疹反复，用什么霜好", k=3)
            assert q.confident
            assert any("湿疹" in it.tags
                       for it in repo.get_items([r.id for r in q.items]).values())
            assert not rec.for_text("哈哈哈笑死我了", k=3).confident
        finally:
            if index is not None:
                index.close()
            store.close()
