"""Group commit: concurrent writers share writes, each gets its own result or the error."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from store.groupcommit import GroupCommit


class Recorder:
    """A write that records its batches, optionally slow, optionally failing."""

    def __init__(self, *, delay_s: float = 0.0, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def __call__(self, items: Sequence[str]) -> list[str]:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.threads.add(threading.get_ident())
            time.sleep(self.delay_s)
            if self.fail_on is not None and self.fail_on in items:
                raise OSError("disk full")
            self.batches.append(list(items))
            return [f"ok:{i}" for i in items]
        finally:
            with self._lock:
                self.active -= 1


def test_a_lone_writer_gets_its_result() -> None:
    rec = Recorder()
    gc: GroupCommit[str, str] = GroupCommit(rec)
    try:
        assert asyncio.run(gc.submit("a")) == "ok:a"
        assert rec.batches == [["a"]]
        assert threading.get_ident() not in rec.threads  # written off the event loop
    finally:
        gc.close()


def test_concurrent_writers_share_writes_and_get_their_own_results() -> None:
    rec = Recorder(delay_s=0.01)
    gc: GroupCommit[str, str] = GroupCommit(rec)

    async def main() -> list[str]:
        return await asyncio.gather(*(gc.submit(f"m{i}") for i in range(200)))

    try:
        results = asyncio.run(main())
    finally:
        gc.close()
    assert results == [f"ok:m{i}" for i in range(200)]
    written = [i for b in rec.batches for i in b]
    assert sorted(written) == sorted(f"m{i}" for i in range(200))
    assert written == [f"m{i}" for i in range(200)]  # in arrival order
    assert len(rec.batches) < 20  # shared, not one write each
    assert rec.max_active == 1  # never two writes at once


def test_writers_arriving_during_a_write_form_the_next_batch() -> None:
    rec = Recorder(delay_s=0.05)
    gc: GroupCommit[str, str] = GroupCommit(rec)

    async def main() -> None:
        first = asyncio.ensure_future(gc.submit("first"))
        await asyncio.sleep(0.01)  # the first write is now in flight
        later = [asyncio.ensure_future(gc.submit(f"l{i}")) for i in range(5)]
        await asyncio.gather(first, *later)

    try:
        asyncio.run(main())
    finally:
        gc.close()
    assert rec.batches == [["first"], [f"l{i}" for i in range(5)]]


def test_max_batch_splits_a_large_burst() -> None:
    rec = Recorder()
    gc: GroupCommit[str, str] = GroupCommit(rec, max_batch=10)

    async def main() -> None:
        await asyncio.gather(*(gc.submit(f"m{i}") for i in range(35)))

    try:
        asyncio.run(main())
    finally:
        gc.close()
    assert [len(b) for b in rec.batches] == [10, 10, 10, 5]


def test_a_failed_write_fails_every_writer_of_its_batch_and_no_other() -> None:
    rec = Recorder(delay_s=0.02, fail_on="bad")
    gc: GroupCommit[str, str] = GroupCommit(rec)

    async def main() -> tuple[list[object], object]:
        first = asyncio.ensure_future(gc.submit("before"))
        await asyncio.sleep(0.005)
        doomed = [asyncio.ensure_future(gc.submit(x)) for x in ("a", "bad", "b")]
        out = await asyncio.gather(*doomed, return_exceptions=True)
        after = await gc.submit("after")  # the committer goes on after a failure
        await first
        return list(out), after

    try:
        out, after = asyncio.run(main())
    finally:
        gc.close()
    assert all(isinstance(e, OSError) for e in out)
    assert after == "ok:after"
    assert ["a", "bad", "b"] not in rec.batches


def test_a_writer_that_goes_away_does_not_break_the_batch() -> None:
    rec = Recorder(delay_s=0.02)
    gc: GroupCommit[str, str] = GroupCommit(rec)

    async def main() -> str:
        first = asyncio.ensure_future(gc.submit("first"))
        await asyncio.sleep(0.005)
        gone = asyncio.ensure_future(gc.submit("gone"))
        stay = asyncio.ensure_future(gc.submit("stay"))
        await asyncio.sleep(0)
        gone.cancel()  # a client disconnect: its item is still written
        await first
        return await stay

    try:
        assert asyncio.run(main()) == "ok:stay"
    finally:
        gc.close()
    assert ["gone", "stay"] in rec.batches


def test_a_wrong_number_of_results_is_an_error() -> None:
    gc: GroupCommit[str, str] = GroupCommit(lambda items: [])
    try:
        with pytest.raises(RuntimeError, match="0 results for 1"):
            asyncio.run(gc.submit("x"))
    finally:
        gc.close()


def test_one_committer_serves_successive_event_loops() -> None:
    rec = Recorder()
    gc: GroupCommit[str, str] = GroupCommit(rec)
    try:
        assert asyncio.run(gc.submit("one")) == "ok:one"
        assert asyncio.run(gc.submit("two")) == "ok:two"
    finally:
        gc.close()
