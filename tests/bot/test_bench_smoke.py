"""The bot's benchmarks still run end to end (short smoke runs: no timing is checked)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(out: Path, *args: str) -> dict[str, dict[str, object]]:
    """Run a benchmark with `--json out`; return its figures by benchmark row."""
    # ~35 s on a quiet machine; a loaded one (other suites beside it) took over 300 s once.
    run = subprocess.run([sys.executable, "-m", *args, "--json", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=840, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    return {str(r["benchmark"]): r["figures"] for r in rows}


def _assert_positive(figures: dict[str, object], names: set[str]) -> None:
    assert set(figures) == names
    for name, value in figures.items():
        assert isinstance(value, int | float) and not isinstance(value, bool), name
        assert math.isfinite(value) and value > 0, (name, value)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bench_callback_smoke(tmp_path: Path) -> None:
    rows = _bench(tmp_path / "callback.json", "bench.bench_callback", "--runs", "1",
                  "--duration", "1", "--connections", "5", "--requests", "400",
                  "--backends", "sqlite,redis", "--processes", "2")
    assert set(rows) == {f"callback ack, {b}, 5 conns, 2 processes" for b in ("sqlite", "redis")}
    for figures in rows.values():
        _assert_positive(figures, {"product_p50_ms", "product_p99_ms", "product_rps",
                                   "floor_p50_ms", "floor_p99_ms", "floor_rps",
                                   "p99_ratio", "throughput_ratio"})


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bench_e2e_smoke(tmp_path: Path) -> None:
    rows = _bench(tmp_path / "e2e.json", "bench.bench_e2e", "--messages", "120", "--runs", "1",
                  "--embedder", "hash", "--backends", "sqlite")
    assert set(rows) == {"e2e callback → profile, sqlite, 1 worker, 120 msgs, embedder hash"}
    for figures in rows.values():
        _assert_positive(figures, {"e2e_msg_s", "drain_msg_s", "pipeline_msg_s",
                                   "embed_texts_s", "e2e_over_pipeline",
                                   "drain_over_pipeline"})
