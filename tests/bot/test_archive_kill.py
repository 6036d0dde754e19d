"""Issue 14 point 4, done-when: `mingpian archive pull` against the fake SDK, 10,000 messages
over many pages, SIGKILLed at random points and restarted: every message is queued exactly
once, and records with an unknown key version are dead-lettered while the pull goes on.

The pull runs as a real subprocess (`python -m app.cli archive pull`) on the embedded store;
the messages only need to reach the durable queue exactly once here (the worker's own
exactly-once apply is tested elsewhere; tests/bot/test_archive_pull.py takes a small run on
to the profiles).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from app.commands.archive import QUEUE
from bot.archive.native import archive_msg_id
from bot.archive.pull import DEAD_NS
from store.sqlite import SQLiteStore
from tests.bot.archive_fake.support import (
    CORP,
    SECRET,
    build_sdk,
    encrypt_record,
    make_keys,
    sdk_env,
    text,
    write_data,
)

N = 10_000
PAGE = 97  # 104 pages
UNKNOWN_VERSION = {1_234, 5_001, 9_999}  # records encrypted under a key we do not hold
ROOT = Path(__file__).resolve().parents[2]


def _msgid(seq: int) -> str:
    return f"CAQQ{seq:06d}+/abc="  # base64-like, as WeCom's: not a valid mingpian id as is


def _env(tmp_path: Path, data: Path, pem: Path, so: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINGPIAN_")}
    env.update(sdk_env(data, fail_first=2))
    env.update({
        "MINGPIAN_DATA_DIR": str(tmp_path / "data"), "MINGPIAN_LOG_LEVEL": "WARNING",
        "MINGPIAN_ARCHIVE__SDK_PATH": str(so), "MINGPIAN_ARCHIVE__CORP_ID": CORP,
        "MINGPIAN_ARCHIVE__SECRET": SECRET,
        "MINGPIAN_ARCHIVE__PRIVATE_KEYS": json.dumps({"1": str(pem)}),
        "MINGPIAN_ARCHIVE__PAGE_SIZE": str(PAGE), "MINGPIAN_ARCHIVE__MIN_CALL_INTERVAL_S": "0",
        "MINGPIAN_ARCHIVE__ROOM_NAMES": "false", "PYTHONPATH": str(ROOT),
    })
    return env


def _pull(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "app.cli", "archive", "pull"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _seq(store: SQLiteStore) -> int:
    cur = store.get_cursor(QUEUE, f"archive:{CORP}")
    return int(cur["seq"]) if cur else 0


def test_point4_sigkill_anywhere_loses_and_repeats_nothing(tmp_path: Path) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    so = build_sdk(tmp_path)
    keys = make_keys(tmp_path, 1)
    records = [encrypt_record(s, text(f"第{s}条 宝宝辅食", msgid=_msgid(s),
                                      sender=f"wmUser{s % 37:03d}"),
                              keys, ver=9 if s in UNKNOWN_VERSION else None)
               for s in range(1, N + 1)]
    env = _env(tmp_path, write_data(tmp_path / "chat.jsonl", records), keys.pem, so)
    (tmp_path / "data").mkdir()
    store = SQLiteStore(tmp_path / "data" / "mingpian.db")
    kills = []
    try:
        for _ in range(3):
            proc = _pull(env)
            target = min(N - PAGE, _seq(store) + rng.randrange(PAGE, N // 3))
            deadline = time.monotonic() + 120
            while proc.poll() is None and _seq(store) < target:
                assert time.monotonic() < deadline, f"the pull stalled (seed {seed})"
                time.sleep(0.01)
            if proc.poll() is None:
                time.sleep(rng.uniform(0, 0.05))  # land anywhere: fetch, decrypt, commit
                proc.send_signal(signal.SIGKILL)
                kills.append(_seq(store))
            proc.communicate(timeout=60)
        proc = _pull(env)
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, (seed, err.decode()[-2000:])
        assert kills, f"no run was killed mid-pull (seed {seed})"
        assert _seq(store) == N
        # Every message in the durable queue exactly once; the undecryptable ones nowhere.
        seen: Counter[str] = Counter()
        while batch := store.claim(QUEUE, consumer="t", max_items=1000, visibility_s=300):
            seen.update(str(i.payload["message"]["msg_id"]) for i in batch)
            assert all(i.payload["message"]["platform"] == "archive" for i in batch)
        want = {archive_msg_id(_msgid(s)) for s in range(1, N + 1) if s not in UNKNOWN_VERSION}
        assert set(seen) == want, f"seed {seed}, killed at seqs {kills}"
        assert max(seen.values()) == 1, f"seed {seed}: {seen.most_common(3)}"
        # Dead-lettered, countable, visible, and the pull went on past them.
        assert store.count(DEAD_NS) == len(UNKNOWN_VERSION)
        dead = {int(rec.doc["record"]["seq"]): rec.doc for _, rec in store.scan(DEAD_NS)}
        assert set(dead) == UNKNOWN_VERSION
        assert all(d["code"] == 10007 for d in dead.values())
        cur = store.get_cursor(QUEUE, f"archive:{CORP}")
        assert cur is not None and cur["counts"]["records"] == N
        assert cur["counts"]["dead"] == len(UNKNOWN_VERSION)
        assert cur["counts"]["messages"] == N - len(UNKNOWN_VERSION)
    finally:
        store.close()


@pytest.mark.parametrize("verb", [["status"], ["dead-letters"]])
def test_point4_status_and_dead_letters_need_settings(verb: list[str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINGPIAN_")}
    env.update({"MINGPIAN_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)})
    res = subprocess.run([sys.executable, "-m", "app.cli", "archive", *verb], cwd=ROOT, env=env,
                         capture_output=True, timeout=60, check=False)
    assert res.returncode == 2 and b"MINGPIAN_ARCHIVE__SDK_PATH" in res.stderr
