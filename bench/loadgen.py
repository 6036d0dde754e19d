"""A small closed-loop HTTP/1.1 load generator (asyncio, keep-alive, raw sockets).

Used by the scale-out drill. It retries a request that failed or got a non-2xx answer, as
WeChat does (WeChat retries 3 times; the drill retries more so that a Redis restart is
ridden out), and records each attempt's latency and status.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    """One prepared request."""

    key: str
    path: str
    body: bytes
    content_type: str = "text/xml"


@dataclass
class LoadResult:
    """What the run saw."""

    latencies_s: list[float] = field(default_factory=list)  # successful attempts
    statuses: dict[int, int] = field(default_factory=dict)  # every attempt; 0 = connection error
    gave_up: list[str] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    elapsed_s: float = 0.0

    @property
    def non_2xx(self) -> int:
        """Attempts that were not answered 2xx (including connection errors)."""
        return sum(n for s, n in self.statuses.items() if not 200 <= s < 300)


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-th percentile (0..100) by nearest rank."""
    if not values:
        return float("nan")
    s = sorted(values)
    idx = min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))
    return s[idx]


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
        elif name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _worker(host: str, port: int, queue: asyncio.Queue[tuple[Request, int]],
                  result: LoadResult, max_tries: int) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while True:
        try:
            req, tries = queue.get_nowait()
        except asyncio.QueueEmpty:
            break
        head = (f"POST {req.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: {req.content_type}\r\nContent-Length: {len(req.body)}\r\n\r\n")
        start = time.perf_counter()
        status = 0
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            writer.write(head.encode() + req.body)
            await writer.drain()
            status = await asyncio.wait_for(_read_response(reader), timeout=10)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, asyncio.LimitOverrunError):
            if writer is not None:
                writer.close()
            reader = writer = None
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            result.latencies_s.append(time.perf_counter() - start)
            result.acked.add(req.key)
        elif tries + 1 < max_tries:
            await asyncio.sleep(min(2.0, 0.05 * 2**tries))
            queue.put_nowait((req, tries + 1))
        else:
            result.gave_up.append(req.key)
    if writer is not None:
        writer.close()


async def run_load(requests: Sequence[Request], *, targets: Sequence[tuple[str, int]],
                   concurrency: int = 50, max_tries: int = 12) -> LoadResult:
    """Send every request (closed loop, `concurrency` connections spread over targets)."""
    queue: asyncio.Queue[tuple[Request, int]] = asyncio.Queue()
    for r in requests:
        queue.put_nowait((r, 0))
    result = LoadResult()
    start = time.perf_counter()
    workers = [
        asyncio.create_task(_worker(*targets[i % len(targets)], queue, result, max_tries))
        for i in range(concurrency)
    ]
    # Workers exit when the queue is momentarily empty; retries re-enter it, so loop.
    while True:
        await asyncio.gather(*workers)
        if queue.empty():
            break
        workers = [
            asyncio.create_task(_worker(*targets[i % len(targets)], queue, result, max_tries))
            for i in range(min(concurrency, queue.qsize()))
        ]
    result.elapsed_s = time.perf_counter() - start
    return result
