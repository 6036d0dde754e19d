"""Queue consumers: `mingpian worker`, and the in-process consumer of embedded `serve`."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

from app.metrics import Metrics
from app.purge import start_purger
from app.services import INBOX, Services
from app.settings import Settings
from app.tag_job import start_tag_sync
from nlp.embed import CachedEmbedder, load_embedder
from store import QueueItem
from store.consumer import ConsumerStats, run_consumer

log = logging.getLogger("mingpian.worker")


def consumer_name() -> str:
    """Return a name unique to this process, for the queue's bookkeeping."""
    return f"{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}"


def handle_inbox(services: Services, items: Sequence[QueueItem]) -> None:
    """Process a batch of inbox items (chat messages and platform events)."""
    services.inbox_handler(items)


def run_worker(services: Services, *, stop: threading.Event,
               metrics: Metrics | None = None) -> ConsumerStats:
    """Consume the inbox, and purge on schedule (app/purge.py), until stop is set; count
    what was processed and dead-lettered into metrics when given."""
    s = services.settings
    log.info("worker %s consuming %r (%s back-end)", consumer_name(), INBOX,
             services.store.backend)
    # Every consumer also purges; one per interval does the work (a slot claim in the store).
    purger = start_purger(services, stop=stop)
    tag_sync = start_tag_sync(services, stop=stop)  # WeCom tags from interests (issue 15)
    try:
        return run_consumer(
            services.store, queue=INBOX, consumer=consumer_name(), stop=stop,
            handler=lambda items: handle_inbox(services, items),
            item_handler=lambda item: handle_inbox(services, [item]),
            max_items=s.worker_batch, visibility_s=s.queue_visibility_s,
            max_attempts=s.queue_max_attempts,
            stats=metrics.consumer_stats(INBOX) if metrics is not None else None,
        )
    finally:
        stop.set()  # run_consumer only returns once stop is set, or on an error
        purger.join(timeout=10)
        if tag_sync is not None:
            tag_sync.join(timeout=10)


def start_background_worker(services: Services, *, metrics: Metrics | None = None
                            ) -> tuple[threading.Thread, threading.Event]:
    """Start the in-process consumer thread; return it and its stop event."""
    stop = threading.Event()
    t = threading.Thread(target=run_worker, args=(services,),
                         kwargs={"stop": stop, "metrics": metrics},
                         name="mingpian-worker", daemon=True)
    t.start()
    return t, stop


def consumer_embedder(settings: Settings) -> CachedEmbedder | None:
    """Return the model the embedded consumer of `mingpian serve` tags with: the settings'
    embedder in ``worker_embedder_processes`` child processes, as `mingpian worker` runs it;
    None when serve runs no consumer (Redis, or embedded_worker off), the setting is 0, or
    the embedder is the hashing stand-in.

    Acknowledgements never wait on tagging (issue 17): in the serving process the model
    held the GIL for whole batches while the event loop waited to answer a callback."""
    if not settings.embedded_worker or settings.redis_url:
        return None
    if settings.worker_embedder_processes <= 0 or settings.embedder.startswith("hash"):
        return None
    log.info("embedded consumer: the model in %d child processes",
             settings.worker_embedder_processes)
    return load_embedder(settings.embedder, threads=settings.embedder_threads or 1,
                         child_processes=settings.worker_embedder_processes)


# -- the embedded consumer as a child process (issue 17) ---------------------------------
PARENT_ENV = "MINGPIAN_EXIT_WITH_PARENT"  # pid of the serve a worker must not outlive
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def exit_with_parent() -> None:
    """In a worker started by :class:`ConsumerProcess`: stop (SIGTERM, handled as a graceful
    stop) when the serve that started it dies, even by SIGKILL; exit now if it already has."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):
        raise SystemExit(0)  # the parent died before prctl took hold


class ConsumerProcess:
    """`mingpian worker` as a child of embedded `mingpian serve`: the consumer (claim, jieba,
    the model, profile commits) runs in its own process, so an acknowledgement never waits
    for its GIL or its event loop. Restarted after restart_s if it exits; stopped (SIGTERM,
    then SIGKILL after timeout) with serve, and it stops itself if serve dies first."""

    def __init__(self, *, env: Mapping[str, str] | None = None, restart_s: float = 2.0) -> None:
        self.argv = [sys.executable, "-m", "app.cli", "worker"]
        self.env = {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}
        self.restart_s = restart_s
        self.starts = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name="mingpian-consumer-process",
                                        daemon=True)

    def start(self) -> ConsumerProcess:
        """Start the child and its supervising thread; return self."""
        self._thread.start()
        return self

    @property
    def pid(self) -> int | None:
        """The running child's pid (None between restarts)."""
        with self._lock:
            return self._proc.pid if self._proc is not None else None

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self._stop.is_set():
                    return
                self._proc = proc = subprocess.Popen(self.argv, env=self.env)
                self.starts += 1
            log.info("embedded consumer: `mingpian worker` process %d", proc.pid)
            code = proc.wait()
            if self._stop.is_set():
                return
            log.warning("embedded consumer process %d exited with %s; restarting in %.0f s",
                        proc.pid, code, self.restart_s)
            self._stop.wait(self.restart_s)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the child gracefully (it finishes its batch), killing it after timeout."""
        with self._lock:
            self._stop.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._thread.join(timeout=5)
