"""SQLiteStore(background_checkpoint=True): commits never checkpoint, a thread does.

Run as ``python -m tests.store.test_checkpoint DIR LIMIT`` it is the writer that
test_sigkill_while_checkpointing_loses_nothing kills.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import store.sqlite as sqlite_mod
from store import open_store
from store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[2]
BATCH = 16


def _wal(path: Path) -> int:
    wal = Path(str(path) + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def _autocheckpoint(st: SQLiteStore) -> int:
    return int(st._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def test_flag_moves_checkpoints_to_one_thread(tmp_path: Path) -> None:
    plain = SQLiteStore(tmp_path / "plain.db")
    assert _autocheckpoint(plain) == 1000 and plain._checkpointer is None
    plain.close()

    st = open_store(redis_url=None, data_dir=tmp_path, background_checkpoint=True)
    assert isinstance(st, SQLiteStore) and st.background_checkpoint
    assert _autocheckpoint(st) == 0
    seen: list[int] = []
    other = threading.Thread(target=lambda: seen.append(_autocheckpoint(st)))
    other.start()
    other.join()
    assert seen == [0]  # every connection of the store, whichever thread opened it
    ck = st._checkpointer
    assert ck is not None and ck.thread.is_alive()
    st.enqueue_many("q", [({"n": n}, None) for n in range(100)])
    st.close()
    assert not ck.thread.is_alive()
    assert _wal(tmp_path / "mingpian.db") == 0  # the final checkpoint emptied it
    again = SQLiteStore(tmp_path / "mingpian.db")
    assert again.queue_depth("q") == 100
    again.close()


def test_wal_stays_bounded_and_nothing_is_lost(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_mod, "WAL_LIMIT_BYTES", 1 << 20)
    monkeypatch.setattr(sqlite_mod, "CHECKPOINT_INTERVAL_S", 0.05)
    path = tmp_path / "s.db"
    st = SQLiteStore(path, background_checkpoint=True)
    pad = "名片" * 200
    commits = 1200  # over 25 MB of WAL frames, were it never checkpointed
    biggest = 0
    for c in range(commits):
        st.enqueue_many("q", [({"n": c * BATCH + i, "pad": pad}, f"k{c}-{i}")
                              for i in range(BATCH)], dedup_ttl_s=3600)
        # A server's writes come with pauses (a tight loop outruns any 0.05 s ticker).
        time.sleep(0.001)
        if c % 20 == 0:
            biggest = max(biggest, _wal(path))
    time.sleep(0.3)
    biggest = max(biggest, _wal(path))
    assert biggest < 8 << 20, f"the WAL grew to {biggest} bytes"
    st.close()
    again = SQLiteStore(path)
    assert again.queue_depth("q") == commits * BATCH
    assert again._conn().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    again.close()


def test_sigkill_while_checkpointing_loses_nothing(tmp_path: Path) -> None:
    progress = tmp_path / "progress"
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.store.test_checkpoint", str(tmp_path), str(256 << 10)],
        cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while _committed(progress) < 400:
            assert worker.poll() is None, "the writer exited early"
            assert time.monotonic() < deadline, "the writer made too little progress"
            time.sleep(0.02)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL
    done = _committed(progress)
    # Only the writer's checkpoint thread copies pages into the database file.
    assert (tmp_path / "s.db").stat().st_size > 64 << 10, "no checkpoint ran before the kill"
    st = SQLiteStore(tmp_path / "s.db")
    assert st._conn().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    depth = st.queue_depth("q")
    # Killed after a commit and before its report at worst: one batch more than reported.
    assert done * BATCH <= depth <= (done + 1) * BATCH
    items = st.claim("q", consumer="c", max_items=depth, visibility_s=30)
    assert [i.payload["n"] for i in items] == list(range(depth))
    st.close()


def _committed(progress: Path) -> int:
    """Return the last commit count the writer reported."""
    try:
        lines = progress.read_bytes().split(b"\n")
    except FileNotFoundError:
        return 0
    full = [ln for ln in lines[:-1] if ln]  # the last line may be half written
    return int(full[-1]) if full else 0


def _writer(folder: Path, limit: int) -> None:
    """Queue batches forever, reporting each commit: the test SIGKILLs this process."""
    sqlite_mod.WAL_LIMIT_BYTES = limit
    sqlite_mod.CHECKPOINT_INTERVAL_S = 0.02
    st = SQLiteStore(folder / "s.db", background_checkpoint=True)
    fd = os.open(folder / "progress", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pad = "x" * 300
    c = 0
    while True:
        st.enqueue_many("q", [({"n": c * BATCH + i, "pad": pad}, f"k{c}-{i}")
                              for i in range(BATCH)], dedup_ttl_s=3600)
        c += 1
        os.write(fd, b"%d\n" % c)


if __name__ == "__main__":
    try:
        _writer(Path(sys.argv[1]), int(sys.argv[2]))
    except sqlite3.Error as e:
        sys.exit(f"writer failed: {e}")
