"""The scale-out drill in its shortened CI form: 2 serve + 3 workers on a real Redis with AOF,
duplicate deliveries, a worker SIGKILLed and Redis restarted mid-run; every distinct message
must be applied exactly once (bench/drill.py exits non-zero otherwise)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_drill_short_form_applies_every_message_exactly_once(tmp_path: Path) -> None:
    out = tmp_path / "drill.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.drill", "--messages", "600", "--users", "60",
         "--groups", "6", "--concurrency", "20", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "DRILL PASSED" in proc.stdout
    import json

    figures = json.loads(out.read_text())
    assert figures["distinct_messages"] == 600 and figures["deliveries"] == 660
    assert figures["lost"] == 0 and figures["applied_twice"] == 0
