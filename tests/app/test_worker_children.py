"""Issue 12 point 6: a SIGKILLed `mingpian worker` takes its embedder child processes with it.

A real worker with the real default model (`use`, which loads in about 2 s) in its two child
processes; /proc tells who its children are (psutil is not a dependency)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _stat(pid: int) -> tuple[int, str, int] | None:
    """Return (ppid, state, start time) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may hold spaces: split after the last ")".
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Return {pid: start time} of every live descendant of root."""
    by_parent: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[1] != "Z":
                by_parent.setdefault(st[0], []).append((int(entry), st[2]))
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid, start in by_parent.get(todo.pop(), []):
            found[pid] = start
            todo.append(pid)
    return found


def alive(pid: int, start: int) -> bool:
    """Whether that very process (not a later one with its pid) still runs; a zombie is
    dead (an init that does not reap may leave one behind)."""
    st = _stat(pid)
    return st is not None and st[2] == start and st[1] != "Z"


def test_point6_sigkilled_worker_leaves_no_children(tmp_path: Path) -> None:
    env = {**os.environ, "MINGPIAN_DATA_DIR": str(tmp_path / "data"), "MINGPIAN_REDIS_URL": "",
           "MINGPIAN_EMBEDDER": "use", "MINGPIAN_WORKER_EMBEDDER_PROCESSES": "2",
           "MINGPIAN_EMBEDDER_THREADS": "1", "MINGPIAN_LOG_LEVEL": "INFO",
           # Strong secrets anyway: a worker may refuse weak ones outside demo mode.
           "MINGPIAN_DEMO": "true", "MINGPIAN_SHARE_SECRET": secrets.token_hex(20),
           "MINGPIAN_LEDGER_KEY": secrets.token_hex(20)}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], cwd=ROOT,
                                  env=env, stdout=out, stderr=subprocess.STDOUT)
    children: dict[int, int] = {}
    try:
        # "consuming" is logged once the embedder's children have loaded the model.
        deadline = time.monotonic() + 120
        while b"consuming" not in log.read_bytes():
            assert worker.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the worker never started consuming"
            time.sleep(0.1)
        children = descendants(worker.pid)
        assert len(children) >= 2, children  # two embedder processes (and a resource tracker)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        assert worker.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 20
        while any(alive(pid, start) for pid, start in children.items()):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        left = [pid for pid, start in children.items() if alive(pid, start)]
        assert left == [], f"children outlived the SIGKILLed worker: {left}"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
        # Whatever a failed run leaves behind is ours to end (by pid, this test's own).
        for pid, start in children.items():
            if alive(pid, start):
                os.kill(pid, signal.SIGKILL)
