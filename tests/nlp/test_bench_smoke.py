"""The tagging benchmark still runs (a smoke run: no timing is checked here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.model
def test_bench_tagging_quick_runs() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_tagging.py"), "--quick"],
                         cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert "EVAL half (held out" in out and "keyword-only baseline" in out
    assert "batched   tagger" in out and "p99" in out
