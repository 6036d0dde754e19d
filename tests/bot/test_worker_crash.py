"""SIGKILL a real `mingpian worker` between acknowledgement and processing: nothing is lost,
nothing is counted twice.

The first worker is tests/bot/crash_worker.py: the real services and consumer loop, with the
inbox handler wrapped so that it stops half-way through its second batch and says so in a
file. The kill then always lands with a batch claimed, part of it applied and none of it
acknowledged (issue 12 point 1: polling for that window from outside was a race that a
fast worker won every time on a fresh clone)."""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from app.main import create_app
from app.services import INBOX
from nlp.profile import ProfileRepo
from store import Store, open_store
from tests.bot.support import bot_settings
from tests.conftest import API_KEY

ROOT = Path(__file__).resolve().parents[2]
USERS = [f"u-{3000 + n}" for n in range(20)]
N = 1200
TEXTS = ["宝宝六个月了，辅食先加什么好？", "哈哈", "好的", "有没有推荐的婴儿湿疹霜",
         "孩子拉粑粑憋得脸通红，几天才一次", "[强]"]


BATCH = 32
HOLD_AFTER = 16  # items of the second batch applied before the worker stops in it


def _spawn(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """Start `mingpian worker`, or with args a module such as the holding crash worker."""
    cmd = list(args) or ["app.cli", "worker"]
    return subprocess.Popen([sys.executable, "-m", *cmd], cwd=ROOT,
                            # demo mode: `mingpian worker` refuses the tests' weak secrets
                            env={**os.environ, "MINGPIAN_DEMO": "true", **env},
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _applied(repo: ProfileRepo) -> int:
    total = 0
    for user in USERS:
        p = repo.get("user", user)
        total += p.message_count if p else 0
    return total


def _in_flight(store: Store, backend: str, target: str) -> int:
    """Items claimed by a consumer and not acknowledged."""
    if backend == "redis":
        r = redis.Redis.from_url(target)
        try:
            # types-redis leaves Redis.xpending() unannotated; the raw command parses the same.
            return int(r.execute_command("XPENDING", f"mp:{{q:{INBOX}}}:s", "w")["pending"])
        finally:
            r.close()
    db = sqlite3.connect(Path(target) / "mingpian.db")
    try:
        row = db.execute("SELECT COUNT(*) FROM queue WHERE queue=? AND claimed_by IS NOT NULL",
                         (INBOX,)).fetchone()
        return int(row[0])
    finally:
        db.close()


def test_point1_sigkill_inside_a_claimed_batch_loses_nothing(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    redis_url = request.getfixturevalue("clean_redis_url") if backend == "redis" else None
    data = tmp_path / "data"
    settings = bot_settings(data, redis_url=redis_url)
    # Acknowledge every message first: the HTTP answer comes once they are durably queued.
    with TestClient(create_app(settings)) as client:
        for start in range(0, N, 400):
            batch = [{"msg_id": f"k{n}", "platform": "wecom", "group_id": "g-crash",
                      "user_id": USERS[n % len(USERS)], "text": TEXTS[n % len(TEXTS)],
                      "ts": 1764202312 + n} for n in range(start, start + 400)]
            r = client.post("/v1/messages", json={"messages": batch},
                            headers={"X-API-Key": API_KEY})
            assert r.json()["accepted"] == 400

    env = {"MINGPIAN_DATA_DIR": str(data), "MINGPIAN_REDIS_URL": redis_url or "",
           "MINGPIAN_EMBEDDER": "hash", "MINGPIAN_QUEUE_VISIBILITY_S": "1",
           "MINGPIAN_WORKER_BATCH": str(BATCH), "MINGPIAN_LOG_LEVEL": "WARNING",
           # Strong secrets anyway: a worker may refuse weak ones outside demo mode.
           "MINGPIAN_DEMO": "true", "MINGPIAN_SHARE_SECRET": secrets.token_hex(20),
           "MINGPIAN_LEDGER_KEY": secrets.token_hex(20)}
    store = open_store(redis_url=redis_url, data_dir=data)
    repo = ProfileRepo(store, half_life_days=30)
    target = redis_url or str(data)
    marker = tmp_path / "holding"
    first = _spawn(env, "tests.bot.crash_worker", "--hold-batch", "2",
                   "--hold-after", str(HOLD_AFTER), "--marker", str(marker))
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            assert first.poll() is None, "the worker exited"
            assert time.monotonic() < deadline, "the worker never reached its second batch"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL
    # One whole batch done and acknowledged, half of the next applied but not acknowledged.
    assert _applied(repo) == BATCH + HOLD_AFTER
    assert _in_flight(store, backend, target) == BATCH  # claimed, not done: the danger
    assert store.queue_depth(INBOX) == N - BATCH

    second = _spawn(env)
    try:
        deadline = time.monotonic() + 90
        while _applied(repo) < N or store.queue_depth(INBOX) > 0:
            assert second.poll() is None, "the second worker exited"
            assert time.monotonic() < deadline, f"only {_applied(repo)} of {N} applied"
            time.sleep(0.05)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    for n, user in enumerate(USERS):
        p = repo.get("user", user)
        assert p is not None and p.message_count == N // len(USERS), (user, n)
    group = repo.get("group", "g-crash")
    assert group is not None and group.message_count == N
    assert store.dead_letters(INBOX) == []
    store.close()
