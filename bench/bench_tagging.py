"""Tagging quality and speed on bench/data/tagging_gold.jsonl.

    .venv/bin/python bench/bench_tagging.py            # quality + speed, prints a report
    .venv/bin/python bench/bench_tagging.py --quick    # smoke run (small speed sample)
    .venv/bin/python bench/bench_tagging.py fit        # refit nlp/dicts/tagger_calibration.json

Split (fixed before any tuning): messages with an odd id number (t001, t003, …) are the FIT
half, even ids the EVAL half. The shipped calibration is fitted on the FIT half only; every
design decision (features, examples, l2, threshold search) was made looking at the FIT half
only. The headline figure is the EVAL half, which nothing was tuned on. A swapped fold (fit
on EVAL, score FIT) gives a 2-fold cross-validation figure over all 366 messages.

One exception: t132 (EVAL) is the example sentence issue 4 quotes ("娃晚上老醒，一晚上起来三四次"
→ 睡眠); nlp/dicts/examples.json lists that sentence verbatim as a 睡眠 prototype, so t132 is
left out of every score (EVAL has 182 scored messages). The first EVAL run, before that
sentence was added, is recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nlp.embed import UseEmbedder, load_embedder  # noqa: E402
from nlp.tagging import (  # noqa: E402
    FEATURES,
    Calibration,
    Tagger,
    default_calibration_path,
    fit_calibration,
    micro_prf,
)
from nlp.taxonomy import Taxonomy  # noqa: E402

GOLD = ROOT / "bench" / "data" / "tagging_gold.jsonl"
L2 = 0.3
SEEN = {"t132"}  # quoted verbatim in nlp/dicts/examples.json (issue 4's example)


def load_gold() -> list[dict[str, object]]:
    """Return the labelled messages."""
    return [json.loads(line) for line in GOLD.read_text(encoding="utf-8").splitlines() if line]


def split(gold: list[dict[str, object]]) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Return (FIT half: odd ids, EVAL half: even ids)."""
    fit = [g for g in gold if int(str(g["id"])[1:]) % 2 == 1]
    ev = [g for g in gold if int(str(g["id"])[1:]) % 2 == 0]
    return fit, ev


def scored(rows: Sequence[dict[str, object]]) -> list[dict[str, object]]:
    """Return the rows that may be scored (not quoted in the tagger's own data)."""
    return [r for r in rows if r["id"] not in SEEN]


def texts_of(rows: Sequence[dict[str, object]]) -> list[str]:
    return [str(r["text"]) for r in rows]


def tags_of(rows: Sequence[dict[str, object]]) -> list[set[str]]:
    return [{str(t) for t in cast("list[object]", r["tags"])} for r in rows]


def _placeholder(name: str) -> Calibration:
    return Calibration(name, FEATURES, tuple(0.0 for _ in FEATURES), 0.0, 0.5)


def fit(embedder_spec: str) -> None:
    """Fit the calibration for one embedder on the FIT half and write it into the file."""
    emb = load_embedder(embedder_spec)
    tagger = Tagger(taxonomy=Taxonomy.load(), embedder=emb, calibration=_placeholder(emb.name))
    fit_rows, _ = split(load_gold())
    cal = fit_calibration(tagger, texts_of(fit_rows), [sorted(t) for t in tags_of(fit_rows)],
                          l2=L2, fitted_on="bench/data/tagging_gold.jsonl, odd ids (FIT half)")
    path = default_calibration_path()
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {
        "default": emb.name, "models": {}}
    doc["models"][emb.name] = cal.to_json()
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path} [{emb.name}]: threshold {cal.threshold}, inner CV F1 on FIT half "
          f"{cal.extra['inner_cv_f1']}")


@dataclass(frozen=True)
class Score:
    """Micro precision, recall and F1, overall and per industry: (P, R, F1) by group."""

    p: float
    r: float
    f1: float
    by: dict[str, tuple[float, float, float]]


def score(pred: list[set[str]], rows: Sequence[dict[str, object]]) -> Score:
    """Return micro P/R/F1 overall and per industry (the message's group)."""
    gold = tags_of(rows)
    p, r, f = micro_prf(pred, gold)
    by: dict[str, tuple[float, float, float]] = {}
    for grp in sorted({str(x["group"]) for x in rows}):
        idx = [i for i, x in enumerate(rows) if x["group"] == grp]
        by[grp] = micro_prf([pred[i] for i in idx], [gold[i] for i in idx])
    return Score(p=p, r=r, f1=f, by=by)


def fmt(name: str, s: Score) -> str:
    per = "  ".join(f"{g} {v[2]:.3f}" for g, v in s.by.items())
    return f"  {name:<34} P {s.p:.3f}  R {s.r:.3f}  F1 {s.f1:.3f}   | {per}"


def quality(emb_spec: str) -> dict[str, float]:
    """Print quality figures; return the headline numbers."""
    emb = load_embedder(emb_spec)
    tax = Taxonomy.load()
    shipped = Tagger(taxonomy=tax, embedder=emb)
    fit_rows, eval_rows = split(load_gold())
    print(f"quality: {len(fit_rows)} FIT + {len(eval_rows)} EVAL messages, embedder "
          f"{emb.name}, calibration fitted on: {shipped.calibration.fitted_on}")

    def run(tagger: Tagger, rows: Sequence[dict[str, object]]) -> list[set[str]]:
        return [{h.tag for h in r.tags} for r in tagger.tag_batch(texts_of(rows))]

    def kw(rows: Sequence[dict[str, object]]) -> list[set[str]]:
        return [set(shipped.keyword_tags(t)) for t in texts_of(rows)]

    eval_scored = scored(eval_rows)
    held = score(run(shipped, eval_scored), eval_scored)
    kw_held = score(kw(eval_scored), eval_scored)
    print(f"EVAL half (held out: nothing was tuned on it; {len(eval_scored)} scored, "
          f"{sorted(SEEN)} left out)")
    print(fmt("tagger (calibration from FIT)", held))
    print(fmt("keyword-only baseline", kw_held))
    # Swapped fold: calibrate on EVAL, score FIT (the examples and features stay as they are;
    # they were designed looking at FIT, so this fold is the optimistic one).
    swap_tagger = Tagger(taxonomy=tax, embedder=emb, calibration=_placeholder(emb.name))
    swap_cal = fit_calibration(swap_tagger, texts_of(eval_rows),
                               [sorted(t) for t in tags_of(eval_rows)], l2=L2)
    swapped = Tagger(taxonomy=tax, embedder=emb, calibration=swap_cal)
    fit_pred = run(swapped, fit_rows)
    sw = score(fit_pred, fit_rows)
    print("FIT half, scored by a calibration fitted on EVAL (swapped fold)")
    print(fmt("tagger (calibration from EVAL)", sw))
    print(fmt("keyword-only baseline", score(kw(fit_rows), fit_rows)))
    both_rows = list(eval_scored) + list(fit_rows)
    pooled = score(run(shipped, eval_scored) + fit_pred, both_rows)
    kw_all = score(kw(both_rows), both_rows)
    print(f"2-fold cross-validation, {len(both_rows)} messages (each half scored by the "
          "other half's fit)")
    print(fmt("tagger", pooled))
    print(fmt("keyword-only baseline", kw_all))
    return {"eval_f1": held.f1, "eval_kw_f1": kw_held.f1,
            "cv_f1": pooled.f1, "cv_kw_f1": kw_all.f1}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def speed(*, n_batch: int, n_single: int, runs: int) -> dict[str, float]:
    """Print throughput and latency of the tagger beside the embedder alone (the floor).

    Both use the raw USE embedder, without the LRU cache, so repeated texts cost full price.
    Product and floor are timed in alternation, batch by batch and message by message, so
    that both see the same machine load (the 2 cores are shared).
    """
    emb = UseEmbedder()
    tagger = Tagger(taxonomy=Taxonomy.load(), embedder=emb)
    tagger.warm()
    texts = texts_of(load_gold())
    content = [t for t in texts if not tagger.is_contentless(t)]
    chatter = [t for t in texts if tagger.is_contentless(t)]
    rng = random.Random(7)
    # A realistic mix: a third chit-chat (thanks, stickers, 哈哈), two thirds contentful.
    mix = [rng.choice(chatter) if i % 3 == 0 else rng.choice(content) for i in range(n_batch)]
    idx = tagger._current()

    def embedded(batch: Sequence[str]) -> list[str]:
        # What the tagger sends to the embedder for these messages.
        return [a[0] for a in (tagger._analyse(t, idx) for t in batch) if not a[3]]

    batch = 64  # the worker's batch (settings.worker_batch)
    chunks = [mix[i : i + batch] for i in range(0, len(mix), batch)]
    floor_inputs = [embedded(c) for c in chunks]
    prod, floor, ratio = [], [], []
    for _ in range(runs):
        t_prod = t_floor = 0.0
        for chunk, inputs in zip(chunks, floor_inputs, strict=True):
            t0 = time.perf_counter()
            tagger.tag_batch(chunk)
            t1 = time.perf_counter()
            emb.encode(inputs)
            t2 = time.perf_counter()
            t_prod, t_floor = t_prod + t1 - t0, t_floor + t2 - t1
        prod.append(len(mix) / t_prod)
        floor.append(len(mix) / t_floor)
        ratio.append(t_floor / t_prod)
    lat, flat = [], []
    for t in mix[:n_single]:
        inputs = embedded([t])
        t0 = time.perf_counter()
        tagger.tag(t)
        t1 = time.perf_counter()
        if inputs:
            emb.encode(inputs)
        t2 = time.perf_counter()
        lat.append((t1 - t0) * 1000)
        flat.append((t2 - t1) * 1000)
    med = statistics.median
    print(f"speed: mix of {len(mix)} messages ({sum(1 for t in mix if t in chatter)} "
          f"chit-chat), batches of {batch}, {runs} runs, USE without cache, product and "
          "floor timed in alternation")
    print(f"  batched   tagger {med(prod):6.0f} msg/s (best {max(prod):.0f}, worst "
          f"{min(prod):.0f})   floor {med(floor):6.0f} msg/s (best {max(floor):.0f}, worst "
          f"{min(floor):.0f})   ratio {med(ratio):.2f} (range {min(ratio):.2f}–"
          f"{max(ratio):.2f})")
    print(f"  single    tagger p50 {_pct(lat, .5):.2f} ms  p99 {_pct(lat, .99):.2f} ms   "
          f"floor p50 {_pct(flat, .5):.2f} ms  p99 {_pct(flat, .99):.2f} ms   "
          f"({len(lat)} messages one at a time; chit-chat costs the floor 0)")
    return {"prod": med(prod), "floor": med(floor), "ratio": med(ratio),
            "p50": _pct(lat, .5), "p99": _pct(lat, .99)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", nargs="?", default="bench", choices=["bench", "fit"])
    ap.add_argument("--embedder", default="use")
    ap.add_argument("--quick", action="store_true", help="small speed sample (smoke run)")
    args = ap.parse_args(argv)
    if args.mode == "fit":
        fit(args.embedder)
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}")
    quality(args.embedder)
    if args.quick:
        speed(n_batch=300, n_single=50, runs=1)
    else:
        speed(n_batch=3000, n_single=1000, runs=5)


if __name__ == "__main__":
    main()
