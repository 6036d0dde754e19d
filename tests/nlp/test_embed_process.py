"""The model in child processes (`mingpian worker`): the same vectors as in-process, in
order, and a child that dies is replaced."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nlp.embed import CachedEmbedder, HashEmbedder, ProcessEmbedder, load_embedder


def test_child_process_vectors_equal_in_process_ones(use_embedder: CachedEmbedder) -> None:
    texts = ["宝宝晚上老醒怎么办", "好的", "有没有适合油皮的防晒", ""] * 9  # two shares
    child = load_embedder("use", threads=1, child_processes=2)
    try:
        assert child.name == "use" and child.dim == 512
        np.testing.assert_allclose(child.encode(texts), use_embedder.inner.encode(texts),
                                   atol=1e-6)
        assert child.encode([]).shape == (0, 512)
    finally:
        child.close()


def test_a_dead_child_is_replaced() -> None:
    emb = ProcessEmbedder("hash:64", processes=2)
    try:
        want = HashEmbedder(64).encode(["防晒霜", "奶粉"])
        np.testing.assert_array_equal(emb.encode(["防晒霜", "奶粉"]), want)
        pids = [p.pid for p in emb._pool._processes.values() if p.pid is not None]
        assert pids and os.getpid() not in pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        np.testing.assert_array_equal(emb.encode(["防晒霜", "奶粉"]), want)
    finally:
        emb.close()


def _niceness(pid: int) -> set[int]:
    """The nice value of every thread of pid (field 19 of /proc/PID/task/TID/stat)."""
    return {int((t / "stat").read_text().rsplit(")", 1)[1].split()[16])
            for t in Path(f"/proc/{pid}/task").iterdir()}


def _settles(check: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Whether check holds within timeout (a pool's second child may still be starting)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_children_run_nice_below_their_parent_and_a_replacement_does_too() -> None:
    """Embedded serve's consumer runs its model this way (issue 17): tagging yields the CPU
    to page views and acknowledgements; the parent itself keeps its priority."""
    base = os.nice(0)
    emb = ProcessEmbedder("hash:64", processes=2, nice=7)
    try:
        emb.encode(["防晒霜"] * 16)
        pids = [p.pid for p in emb._pool._processes.values() if p.pid is not None]
        assert len(pids) == 2
        assert _settles(lambda: all(_niceness(p) == {min(base + 7, 19)} for p in pids))
        assert os.nice(0) == base
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        emb.encode(["防晒霜"] * 16)
        again = [p.pid for p in emb._pool._processes.values() if p.pid is not None]
        assert again and not set(again) & set(pids)
        assert _settles(lambda: all(_niceness(p) == {min(base + 7, 19)} for p in again))
    finally:
        emb.close()
    plain = ProcessEmbedder("hash:64", processes=1)
    try:
        plain.encode(["防晒霜"])
        (pid,) = [p.pid for p in plain._pool._processes.values() if p.pid is not None]
        assert _niceness(pid) == {base}  # it has answered: its start is done
    finally:
        plain.close()
