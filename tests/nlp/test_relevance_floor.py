"""Issue 16: a regression floor on eval set v2 (bench/eval_v2), with the shipped parameters.

Nothing was tuned on v2 (BENCHMARKS.md, "Issue 16"): these floors sit a little under the
figures measured when the parameters were frozen, so a change that loses relevance on data
nobody tuned on fails here. Quality asserts only, no timing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.bench_relevance import System, build_system, evaluate, load_v2
from nlp.embed import CachedEmbedder

# Measured 2026-12-02 (USE): query hit@3 0.711, hard 0.417, sessions 0.373, provider
# sessions 0.444, movers with the old topic in the top 3 31 %, chit-chat confident 0 / 20,
# sold-out or inactive items in a top 3: 0.
FLOORS = {"query": 0.69, "hard": 0.39, "session": 0.34, "provider": 0.38}
MOVERS_OLD_TOP3_MAX = 0.40
# About 20 s on a quiet 2-core machine (the v2 catalog embedded, 388 queries, 67 sessions);
# the suite's 300 s default is too short only when the cores are shared many times over.
pytestmark = pytest.mark.timeout(900)
CHITCHAT_CONFIDENT_MAX = 1


@pytest.fixture(scope="module")
def figures(use_embedder: CachedEmbedder, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[str, Any]]:
    es = load_v2()
    sys_: System = build_system(es, use_embedder, Path(tmp_path_factory.mktemp("v2")))
    try:
        yield evaluate(es, sys_, baselines=False)
    finally:
        sys_.close()  # the index and the SQLite store (3.13 warns on an unclosed one)


def test_point_floor_queries(figures: dict[str, Any]) -> None:
    assert figures["mingpian.query"]["hit@3"] >= FLOORS["query"]
    assert figures["mingpian.hard"]["hit@3"] >= FLOORS["hard"]
    assert figures["trap_top3"] == 0


def test_point_floor_sessions(figures: dict[str, Any]) -> None:
    assert figures["mingpian.session"]["hit@3"] >= FLOORS["session"]
    assert figures["mingpian.provider"]["hit@3"] >= FLOORS["provider"]
    assert figures["mingpian.movers_old_top3"] <= MOVERS_OLD_TOP3_MAX


def test_point_floor_chitchat(figures: dict[str, Any]) -> None:
    assert figures["chitchat_confident"] <= CHITCHAT_CONFIDENT_MAX
