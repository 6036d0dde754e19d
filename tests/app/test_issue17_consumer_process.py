"""Issue 17: embedded `mingpian serve` consumes in a child `mingpian worker` process, so an
acknowledgement never shares the consumer's GIL. Over real HTTP and real processes: the child
exists, it turns callbacks into profiles, it is restarted when it dies, it stops with serve
(gracefully on SIGTERM, by itself when serve is SIGKILLed), and its counters reach serve's
/metrics."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.bot.support import AES_KEY, CORP_ID, TOKEN, message_xml, next_msg_id, wecom_post
from tests.serve import ServeProcess

KEY = "test-key-consumer-process"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (State: line of /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def _worker_of(serve_pid: int) -> int | None:
    for pid in _children(serve_pid):
        if "app.cli worker" in _cmdline(pid) and _alive(pid):
            return pid
    return None


def _until(what: Callable[[], object], timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:.0f} s")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    proc = ServeProcess({
        "MINGPIAN_DATA_DIR": str(tmp_path / "data"), "MINGPIAN_REDIS_URL": "",
        "MINGPIAN_EMBEDDER": "hash", "MINGPIAN_LOG_LEVEL": "INFO",
        "MINGPIAN_API_KEYS": KEY, "MINGPIAN_WECOM__CORP_ID": CORP_ID,
        "MINGPIAN_WECOM__TOKEN": TOKEN, "MINGPIAN_WECOM__AES_KEY": AES_KEY,
        "MINGPIAN_WECOM__AGENT_ID": "1000002",
    }, workdir=tmp_path)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def _profile_count(serve: ServeProcess, user: str) -> int:
    r = httpx.get(f"{serve.url}/v1/users/{user}/profile",
                  headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    return int(r.json()["message_count"]) if r.status_code == 200 else 0


def _send(serve: ServeProcess, user: str, n: int) -> None:
    with httpx.Client(timeout=10) as c:
        for i in range(n):
            params, body = wecom_post(message_xml(content=f"宝宝湿疹用什么面霜 {i}",
                                                  sender=user, msg_id=next_msg_id()))
            assert c.post(f"{serve.url}/wecom/callback", params=params,
                          content=body).status_code == 200


def test_embedded_consumer_is_a_child_worker_that_is_restarted(serve: ServeProcess) -> None:
    worker = _until(lambda: _worker_of(serve.proc.pid))
    assert isinstance(worker, int)
    _send(serve, "u-cp-1", 5)
    _until(lambda: _profile_count(serve, "u-cp-1") == 5)
    text = httpx.get(f"{serve.url}/metrics", timeout=5).text
    processed = re.search(r'mingpian_queue_processed_total\{queue="inbox"\} ([0-9.]+)', text)
    assert processed is not None and float(processed.group(1)) >= 5  # the child's counter

    # Serve itself consumes nothing: with the child paused, messages wait in the queue.
    os.kill(worker, signal.SIGSTOP)
    try:
        _send(serve, "u-cp-3", 2)
        time.sleep(2)
        assert _profile_count(serve, "u-cp-3") == 0
    finally:
        os.kill(worker, signal.SIGCONT)
    _until(lambda: _profile_count(serve, "u-cp-3") == 2)

    # The child dies (a crash): serve starts another, which takes the next messages.
    os.kill(worker, signal.SIGKILL)
    second = _until(lambda: (w := _worker_of(serve.proc.pid)) not in (None, worker) and w)
    assert isinstance(second, int)
    _send(serve, "u-cp-2", 3)
    _until(lambda: _profile_count(serve, "u-cp-2") == 3)

    # Serve stops (SIGTERM, as a process manager does): the child stops with it.
    serve.stop()
    assert serve.proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    _until(lambda: not _alive(second), timeout=30)


def test_child_worker_stops_when_serve_is_killed(serve: ServeProcess) -> None:
    worker = _until(lambda: _worker_of(serve.proc.pid))
    assert isinstance(worker, int)
    serve.kill()  # SIGKILL: serve cannot stop it; the child notices and stops itself
    _until(lambda: not _alive(worker), timeout=30)
