"""SIGKILL a consumer process mid-batch, start another: every item's effect applies once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from store import open_store
from store.consumer import wait_until_empty

ROOT = Path(__file__).resolve().parents[2]
N = 300


def _spawn(backend: str, target: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.crash_worker", backend, target, "crashq"],
        cwd=ROOT, env={**os.environ, **env},
    )


def test_sigkill_mid_batch_loses_nothing_and_applies_once(
    backend: str, tmp_path: Path, request: object
) -> None:
    import pytest

    assert isinstance(request, pytest.FixtureRequest)
    target = request.getfixturevalue("clean_redis_url") if backend == "redis" else str(tmp_path)
    store = open_store(redis_url=target if backend == "redis" else None, data_dir=tmp_path)
    for n in range(N):
        store.enqueue("crashq", {"n": n})

    ready = tmp_path / "ready"
    first = _spawn(backend, target, {"CRASH_AT": "47", "READY_FILE": str(ready)})
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert first.poll() is None, "the first worker exited before its crash point"
        assert time.monotonic() < deadline, "the first worker never reached its crash point"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL
    applied_before = sum(store.counters("effects.applied").values())
    assert applied_before == 47
    assert store.queue_depth("crashq") > 0

    second = _spawn(backend, target, {"RUN_FOR": "30"})
    try:
        assert wait_until_empty(store, "crashq", timeout_s=60)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    counts = store.counters("effects.applied")
    assert len(counts) == N
    assert set(counts.values()) == {1}, "an effect was applied twice"
    assert store.dead_letters("crashq") == []
    store.close()
