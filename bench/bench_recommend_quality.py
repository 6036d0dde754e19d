"""Recommendation quality on the labelled set: mingpian vs BM25 over jieba tokens, same run.

    .venv/bin/python -m bench.bench_recommend_quality [--embedder use] [--grid] [--smoke]

Reads bench/data/recommend_gold.jsonl (chat message → relevant demo-catalog item ids, with
an ``indirect`` flag for messages that share no 2-character substring with their items) and
the demo catalog; prints hit@1/3/10 and MRR overall, on the direct and on the indirect part.
mingpian answers through the same code as ``POST /v1/recommendations/query``
(Recommender.for_text) over a real SQLite store and the faiss index.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import numpy as np

from catalog.repo import CatalogRepo
from catalog_sync.loader import demo_catalog_path, import_rows, read_jsonl
from models.catalog import CatalogItem
from nlp.embed import load_embedder
from nlp.index import VectorIndex
from nlp.recommend import Recommender, TagSpace
from nlp.signals import Signals
from store.sqlite import SQLiteStore

GOLD = Path(__file__).parent / "data" / "recommend_gold.jsonl"

Ranker = Callable[[str], list[str]]
Keep = Callable[[dict[str, object]], bool]


def relevant(g: dict[str, object]) -> set[str]:
    """Return the ids a gold query counts as right (its "relevant" list)."""
    return {str(i) for i in cast("list[object]", g["relevant"])}


def metrics(gold: Sequence[dict[str, object]], ranked: Sequence[list[str]]) -> dict[str, float]:
    """Return hit@1/3/10 and MRR (rank of the first relevant item; none in top 10 → 0)."""
    h1 = h3 = h10 = rr = 0.0
    for g, ids in zip(gold, ranked, strict=True):
        rel = relevant(g)
        rank = next((r for r, i in enumerate(ids[:10]) if i in rel), None)
        if rank is not None:
            h1 += rank < 1
            h3 += rank < 3
            h10 += 1
            rr += 1 / (rank + 1)
    n = max(len(gold), 1)
    return {"n": len(gold), "hit@1": h1 / n, "hit@3": h3 / n, "hit@10": h10 / n, "mrr": rr / n}


def bm25_ranker(items: Sequence[CatalogItem]) -> Ranker:
    """Return a BM25 (Okapi) ranker over jieba tokens of the items' embedding texts."""
    import jieba
    from rank_bm25 import BM25Okapi

    tok = jieba.Tokenizer()
    jieba.setLogLevel(60)

    def tokens(text: str) -> list[str]:
        return [w for w in tok.lcut(text.lower()) if w.strip() and any(c.isalnum() for c in w)]

    bm25 = BM25Okapi([tokens(it.embedding_text()) for it in items])
    ids = [it.id for it in items]

    def rank(text: str) -> list[str]:
        scores = bm25.get_scores(tokens(text))
        return [ids[j] for j in np.argsort(-scores, kind="stable")[:10]]

    return rank


def build(embedder_spec: str, folder: Path, *, threads: int | None = 1
          ) -> tuple[Recommender, list[CatalogItem], float]:
    """Import the demo catalog into a fresh store and return a recommender over it."""
    embedder = load_embedder(embedder_spec, threads=threads)
    store = SQLiteStore(folder / "bench.db")
    repo = CatalogRepo(store, embedder=embedder)
    started = time.perf_counter()
    report = import_rows(repo, read_jsonl(demo_catalog_path()))
    assert not report.errors, report.errors
    index = VectorIndex(repo, dim=embedder.dim)
    index.load()
    rec = Recommender(index=index, items=repo, embedder=embedder, signals=Signals(store),
                      tags=TagSpace.default(embedder))
    took = time.perf_counter() - started
    return rec, [it for it in repo.iter_items() if it.active], took


def evaluate(name: str, rank: Ranker, gold: Sequence[dict[str, object]]) -> dict[str, dict[str, float]]:
    """Print and return the metrics overall, direct and indirect."""
    ranked = [rank(str(g["text"])) for g in gold]
    parts = {
        "all": list(range(len(gold))),
        "direct": [i for i, g in enumerate(gold) if not g["indirect"]],
        "indirect": [i for i, g in enumerate(gold) if g["indirect"]],
    }
    out: dict[str, dict[str, float]] = {}
    for part, rows in parts.items():
        m = metrics([gold[i] for i in rows], [ranked[i] for i in rows])
        out[part] = m
        print(f"{name:<10} {part:<9} n={m['n']:<4} hit@1 {m['hit@1']:.3f}  hit@3 {m['hit@3']:.3f}"
              f"  hit@10 {m['hit@10']:.3f}  MRR {m['mrr']:.3f}")
    return out


def _ranked(rec: Recommender, gold: Sequence[dict[str, object]]) -> list[list[str]]:
    return [[r.id for r in rec.for_text(str(g["text"]), k=10).items] for g in gold]


GRID = [(tau, beta, w) for tau in (0.35, 0.4, 0.45) for beta in (0.3, 0.5, 0.8)
        for w in (0.5, 0.7, 1.0)]


def cross_validate(rec: Recommender, gold: list[dict[str, object]]) -> None:
    """2-fold CV: pick (tag_threshold, tag_boost, full_text_weight) on one half by hit@3,
    score the other half with it; print the held-out figures of both halves together."""
    shipped = (rec.tag_threshold, rec.tag_boost, rec.full_text_weight)
    folds = [[g for n, g in enumerate(gold) if n % 2 == f] for f in (0, 1)]
    per_config: dict[tuple[float, float, float], list[list[list[str]]]] = {}
    for cfg in GRID:
        rec.tag_threshold, rec.tag_boost, rec.full_text_weight = cfg
        per_config[cfg] = [_ranked(rec, fold) for fold in folds]
    held_gold: list[dict[str, object]] = []
    held_ranked: list[list[str]] = []
    for fit in (0, 1):
        best = max(GRID, key=lambda c: (metrics(folds[fit], per_config[c][fit])["hit@3"],
                                        metrics(folds[fit], per_config[c][fit])["mrr"]))
        other = 1 - fit
        print(f"cv: fit on half {fit} → tag_threshold {best[0]}, tag_boost {best[1]}, "
              f"full_text_weight {best[2]}; scored on half {other}")
        held_gold += folds[other]
        held_ranked += per_config[best][other]
    parts: tuple[tuple[str, Keep], ...] = (
        ("all", lambda g: True), ("direct", lambda g: not g["indirect"]),
        ("indirect", lambda g: bool(g["indirect"])))
    for part, keep in parts:
        rows = [i for i, g in enumerate(held_gold) if keep(g)]
        m = metrics([held_gold[i] for i in rows], [held_ranked[i] for i in rows])
        print(f"{'held-out':<10} {part:<9} n={m['n']:<4} hit@1 {m['hit@1']:.3f}  hit@3 "
              f"{m['hit@3']:.3f}  hit@10 {m['hit@10']:.3f}  MRR {m['mrr']:.3f}")
    rec.tag_threshold, rec.tag_boost, rec.full_text_weight = shipped


def bot_threshold(rec: Recommender, gold: list[dict[str, object]]) -> None:
    """How the top score separates real needs from chit-chat (the bot's confidence gate)."""
    tagging = Path(__file__).parent / "data" / "tagging_gold.jsonl"
    chat = [json.loads(line) for line in tagging.read_text(encoding="utf-8").splitlines() if line]
    chitchat = [str(t["text"]) for t in chat if not t["tags"]]
    need = [(rec.for_text(str(g["text"]), k=1).items[0], g) for g in gold]
    pos = np.asarray([r.score for r, _ in need])
    hit = np.asarray([r.id in relevant(g) for r, g in need])
    neg = np.asarray([rec.for_text(t, k=1).items[0].score for t in chitchat])
    print(f"bot gate: top-1 score, needs (n={len(pos)}) median {np.median(pos):.2f}; "
          f"chit-chat from tagging_gold (n={len(neg)}) median {np.median(neg):.2f}, "
          f"95th pct {np.percentile(neg, 95):.2f}")
    for th in (0.45, 0.5, 0.55, 0.6):
        ans = pos >= th
        print(f"  threshold {th:.2f}: answers {ans.mean():.0%} of needs (top-1 right in "
              f"{hit[ans].mean():.0%} of those), {(neg >= th).mean():.1%} of chit-chat")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--embedder", default="use")
    p.add_argument("--threads", type=int, default=1, help="embedder threads (1)")
    p.add_argument("--cv", action="store_true",
                   help="also 2-fold cross-validate the three scoring parameters")
    p.add_argument("--bot", action="store_true",
                   help="also print how the top score separates needs from chit-chat")
    p.add_argument("--smoke", action="store_true", help="20 messages only (CI smoke run)")
    args = p.parse_args()
    gold = [json.loads(line) for line in GOLD.read_text(encoding="utf-8").splitlines() if line]
    if args.smoke:
        gold = gold[:10] + [g for g in gold if g["indirect"]][:10]
    with tempfile.TemporaryDirectory() as tmp:
        rec, items, took = build(args.embedder, Path(tmp), threads=args.threads)
        print(f"catalog: {len(items)} active items, imported and indexed in {took:.1f} s "
              f"(embedder {args.embedder}); {len(gold)} messages, "
              f"{sum(1 for g in gold if g['indirect'])} indirect; parameters: tag_threshold "
              f"{rec.tag_threshold}, tag_boost {rec.tag_boost}, full_text_weight "
              f"{rec.full_text_weight}")
        started = time.perf_counter()
        mine = evaluate("mingpian", lambda t: [r.id for r in rec.for_text(t, k=10).items], gold)
        per = (time.perf_counter() - started) / len(gold) * 1000
        bm25 = evaluate("bm25", bm25_ranker(items), gold)
        gap = (mine["indirect"]["hit@3"] - bm25["indirect"]["hit@3"]) * 100
        print(f"indirect hit@3: mingpian − BM25 = {gap:+.1f} points")
        print(f"for_text, in-process, first time each message is seen (embedding included): "
              f"{per:.1f} ms a message (mean)")
        if args.cv:
            cross_validate(rec, gold)
        if args.bot:
            bot_threshold(rec, gold)


if __name__ == "__main__":
    main()
