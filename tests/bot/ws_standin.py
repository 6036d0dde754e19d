"""A local stand-in for WeCom's AI-bot long-connection server (WECOM.md §1.7).

Speaks the frames of ``wss://openws.work.weixin.qq.com`` over a real WebSocket on a local
port (plain ``ws://``): checks ``aibot_subscribe`` (bot id and secret), answers ``ping``,
pushes ``aibot_msg_callback`` / ``aibot_event_callback`` frames, records the client's
``aibot_respond_msg`` frames and answers each (errcode 0, or one a test chose). A test drives
it from its own thread: push a message, drop the connection mid-stream (no close frame),
stop answering pings on the current connection, kick with ``disconnected_event``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

JSON = dict[str, Any]


@dataclass
class _Conn:
    ws: ServerConnection
    number: int
    subscribed: bool = False
    mute_pings: bool = False
    open: bool = True


@dataclass
class StandinLog:
    """What the stand-in saw (read under its lock, or after the client stopped)."""

    subscribes: list[JSON] = field(default_factory=list)  # {"bot_id", "ok"}
    connections: int = 0  # subscribed connections, ever
    max_active: int = 0  # most subscribed connections open at once
    pings: int = 0
    replies: list[JSON] = field(default_factory=list)  # aibot_respond_msg frames received
    closed: int = 0  # subscribed connections that ended


class AibotWsStandin:
    """WeCom's long-connection server on 127.0.0.1; use as a context manager."""

    def __init__(self, *, bot_id: str, secret: str) -> None:
        self.bot_id = bot_id
        self.secret = secret
        self.log = StandinLog()
        # errcode to answer for a reply with this req_id (absent: 0); used once each.
        self.reply_errcodes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._conns: list[_Conn] = []
        self._numbers = itertools.count(1)
        self._req = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ws-standin",
                                        daemon=True)
        self._server: Server | None = None
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------
    def __enter__(self) -> AibotWsStandin:
        self._thread.start()
        self._server = self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def url(self) -> str:
        """The ws:// address a client connects to."""
        return f"ws://127.0.0.1:{self.port}"

    async def _start(self) -> Server:
        server = await serve(self._handle, "127.0.0.1", 0, ping_interval=None)
        self.port = next(iter(server.sockets)).getsockname()[1]
        return server

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # -- the protocol --------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        conn = _Conn(ws, next(self._numbers))
        try:
            async for raw in ws:
                frame = json.loads(raw)
                await self._on_frame(conn, frame)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                conn.open = False
                if conn.subscribed:
                    self.log.closed += 1

    async def _on_frame(self, conn: _Conn, frame: JSON) -> None:
        cmd = frame.get("cmd")
        req_id = frame.get("headers", {}).get("req_id", "")
        if not conn.subscribed:
            body = frame.get("body") or {}
            ok = (cmd == "aibot_subscribe" and body.get("bot_id") == self.bot_id
                  and body.get("secret") == self.secret)
            with self._lock:
                self.log.subscribes.append({"bot_id": body.get("bot_id"), "ok": ok})
            if not ok:
                await conn.ws.send(json.dumps({"headers": {"req_id": req_id},
                                               "errcode": 40058, "errmsg": "invalid secret"}))
                await conn.ws.close()
                return
            with self._lock:
                conn.subscribed = True
                self._conns.append(conn)
                self.log.connections += 1
                active = sum(1 for c in self._conns if c.open and c.subscribed)
                self.log.max_active = max(self.log.max_active, active)
            await conn.ws.send(json.dumps({"headers": {"req_id": req_id}, "errcode": 0,
                                           "errmsg": "ok"}))
            return
        if cmd == "ping":
            with self._lock:
                self.log.pings += 1
                mute = conn.mute_pings
            if not mute:
                await conn.ws.send(json.dumps({"headers": {"req_id": req_id}, "errcode": 0,
                                               "errmsg": "ok"}))
            return
        if cmd == "aibot_respond_msg":
            with self._lock:
                self.log.replies.append(frame)
                errcode = self.reply_errcodes.pop(req_id, 0)
            await conn.ws.send(json.dumps({"headers": {"req_id": req_id}, "errcode": errcode,
                                           "errmsg": "ok" if errcode == 0 else "refused"}))

    def _current(self) -> _Conn:
        with self._lock:
            live = [c for c in self._conns if c.open and c.subscribed]
        if not live:
            raise RuntimeError("no subscribed connection")
        return live[-1]

    # -- what a test does ----------------------------------------------------------
    def push(self, body: JSON, *, cmd: str = "aibot_msg_callback",
             req_id: str | None = None, then_drop: bool = False) -> str:
        """Send a callback frame on the current connection; return its req_id. With
        then_drop, cut the TCP connection right after it (no close frame)."""
        rid = req_id or f"req-{next(self._req)}"
        conn = self._current()

        async def send() -> None:
            await conn.ws.send(json.dumps({"cmd": cmd, "headers": {"req_id": rid},
                                           "body": body}, ensure_ascii=False))
            if then_drop:
                conn.ws.transport.abort()

        self._call(send())
        return rid

    def drop(self) -> None:
        """Cut the current connection's TCP connection (no close frame)."""
        conn = self._current()
        self._loop.call_soon_threadsafe(conn.ws.transport.abort)

    def mute_pings(self) -> int:
        """Stop answering application pings on the current connection; return its number."""
        conn = self._current()
        with self._lock:
            conn.mute_pings = True
        return conn.number

    def kick(self) -> None:
        """Send disconnected_event on the current connection, then close it."""
        conn = self._current()

        async def send() -> None:
            await conn.ws.send(json.dumps({
                "cmd": "aibot_event_callback", "headers": {"req_id": f"req-{next(self._req)}"},
                "body": {"msgid": f"kick-{conn.number}", "aibotid": self.bot_id,
                         "create_time": int(time.time()), "chattype": "single",
                         "from": {"userid": "system"}, "msgtype": "event",
                         "event": {"eventtype": "disconnected_event"}}}))
            await conn.ws.close()

        self._call(send())

    def protocol_ping(self) -> bool:
        """Send a WebSocket protocol ping on the current connection; return whether the
        client answered it with a pong."""
        conn = self._current()

        async def ping() -> bool:
            pong = await conn.ws.ping()
            try:
                await asyncio.wait_for(pong, timeout=5)
            except TimeoutError:
                return False
            return True

        return bool(self._call(ping()))

    def is_connected(self) -> bool:
        """Return whether a subscribed connection is open now."""
        with self._lock:
            return any(c.open and c.subscribed for c in self._conns)

    def current_number(self) -> int:
        """Return the number of the current subscribed connection (0: none)."""
        with self._lock:
            live = [c.number for c in self._conns if c.open and c.subscribed]
        return live[-1] if live else 0

    def snapshot(self) -> StandinLog:
        """Return a copy of what was seen so far."""
        with self._lock:
            return StandinLog(list(self.log.subscribes), self.log.connections,
                              self.log.max_active, self.log.pings, list(self.log.replies),
                              self.log.closed)


def wait_until(cond: Callable[[], bool], *, timeout_s: float = 30.0, what: str = "") -> None:
    """Poll cond until it holds; fail the test (AssertionError) after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    if not cond():
        raise AssertionError(f"timed out waiting for {what or cond}")
