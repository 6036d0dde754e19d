"""The bot's benchmarks still run end to end (short smoke runs: no timing is checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args: str) -> str:
    # ~35 s on a quiet machine; a loaded one (other suites beside it) took over 300 s once.
    run = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=840, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bench_callback_smoke() -> None:
    out = _bench("bench.bench_callback", "--runs", "1", "--duration", "1", "--connections",
                 "5", "--requests", "400", "--backends", "sqlite,redis", "--processes", "2")
    for backend in ("sqlite", "redis"):
        assert f"| callback ack, {backend}, 5 conns, 2 processes | p50 " in out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bench_e2e_smoke() -> None:
    out = _bench("bench.bench_e2e", "--messages", "120", "--runs", "1", "--embedder", "hash",
                 "--backends", "sqlite")
    assert "| e2e callback → profile, sqlite, 1 worker, 120 msgs, embedder hash | e2e " in out
