"""The model in child processes (`mingpian worker`): the same vectors as in-process, in
order, and a child that dies is replaced."""

from __future__ import annotations

import os
import signal

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
