"""The scale-out drill in its shortened CI form: 2 serve + 3 workers on a real Redis with AOF,
duplicate deliveries, a worker SIGKILLed and Redis restarted mid-run; every distinct message
must be applied exactly once (bench/drill.py exits non-zero otherwise); and afterwards no
process of the drill is left running (issue 12 point 6: the SIGKILLed worker's embedder
children used to be)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def processes_using(workdir: Path) -> list[int]:
    """Return the pids of live processes whose command line or environment names workdir.

    Every process of the drill does: redis-server has it as --dir, serve and worker in
    MINGPIAN_DATA_DIR, and their children inherit that environment."""
    needle = str(workdir).encode()
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
            if stat[stat.rindex(b")") + 2 :].startswith(b"Z"):
                continue  # a zombie no init reaped: dead
            text = (Path(f"/proc/{entry}/cmdline").read_bytes()
                    + Path(f"/proc/{entry}/environ").read_bytes())
        except OSError:  # gone meanwhile, or another user's
            continue
        if needle in text:
            found.append(int(entry))
    return found


def test_drill_short_form_applies_every_message_exactly_once(tmp_path: Path) -> None:
    out = tmp_path / "drill.json"
    workdir = tmp_path / "cluster"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.drill", "--messages", "600", "--users", "60",
             "--groups", "6", "--concurrency", "20", "--json", str(out),
             "--workdir", str(workdir)],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )
        # SIGKILLed at the end of a drill is not yet gone: give the kernel a moment.
        deadline = time.monotonic() + 10
        while (left := processes_using(workdir)) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for pid in processes_using(workdir):  # ours (they name our tmp_path): end them
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert left == [], f"the drill left processes running: {left}"
    assert "DRILL PASSED" in proc.stdout
    import json

    figures = json.loads(out.read_text())
    assert figures["distinct_messages"] == 600 and figures["deliveries"] == 660
    assert figures["lost"] == 0 and figures["applied_twice"] == 0
