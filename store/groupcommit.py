"""Group commit: concurrent async writers share one store write.

Each callback must be durably queued before it is acknowledged. Done one by one, every
acknowledgement pays a whole SQLite transaction or Redis round trip, and they queue up behind
each other. Here a writer hands its item over and waits; one store call at a time, on one
thread off the event loop, writes every item that arrived since the previous call began, and
only then are their writers answered. Under load the batches grow by themselves; a lone
writer waits for one ordinary write.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _LoopState(Generic[T, R]):
    loop: asyncio.AbstractEventLoop
    pending: list[tuple[T, asyncio.Future[R]]] = field(default_factory=list)
    busy: bool = False  # a write is scheduled or in flight


class GroupCommit(Generic[T, R]):
    """Batch concurrent ``await submit(item)`` calls into ``write(items) -> results``.

    ``write`` runs on one worker thread, never two at once, and must return one result per
    item, in order; if it raises, every writer of that batch gets the exception (nothing of
    the batch was written: the store calls used here are all-or-nothing).
    """

    def __init__(self, write: Callable[[Sequence[T]], Sequence[R]], *, max_batch: int = 512,
                 name: str = "mingpian-commit") -> None:
        self._write = write
        self.max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        # One state per event loop: tests and tools may drive the same object from several.
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState[T, R]] = \
            weakref.WeakKeyDictionary()

    async def submit(self, item: T) -> R:
        """Return write's result for item once the batch holding it is written."""
        loop = asyncio.get_running_loop()
        st = self._states.get(loop)
        if st is None:
            st = self._states[loop] = _LoopState(loop)
        fut: asyncio.Future[R] = loop.create_future()
        st.pending.append((item, fut))
        if not st.busy:
            st.busy = True
            # Not at once: writers whose requests arrived in the same turn of the loop run
            # first and join this batch.
            loop.call_soon(self._launch, st)
        return await fut

    def _launch(self, st: _LoopState[T, R]) -> None:
        batch = st.pending[: self.max_batch]
        del st.pending[: self.max_batch]
        done = self._executor.submit(self._write, [item for item, _ in batch])
        done.add_done_callback(
            lambda f: st.loop.call_soon_threadsafe(self._finish, st, batch, f))

    def _finish(self, st: _LoopState[T, R], batch: list[tuple[T, asyncio.Future[R]]],
                done: Future[Sequence[R]]) -> None:
        error = done.exception()
        results: Sequence[R] = () if error is not None else done.result()
        if error is None and len(results) != len(batch):
            error = RuntimeError(f"write returned {len(results)} results for {len(batch)}")
        for n, (_, fut) in enumerate(batch):
            if fut.done():  # the writer went away (client disconnect); its item is written
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(results[n])
        if st.pending:
            self._launch(st)
        else:
            st.busy = False

    def close(self) -> None:
        """Finish the write in flight and stop the thread."""
        self._executor.shutdown(wait=True)
