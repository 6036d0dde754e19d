"""The AI bot's long connection (智能机器人长连接, WECOM.md §1.7): one WebSocket per bot.

For deployments without a public address: instead of WeCom POSTing callbacks to us, we hold
one WebSocket open to ``wss://openws.work.weixin.qq.com`` and WeCom pushes the same JSON
bodies down it, unencrypted. The frames (all JSON text, ``{cmd, headers:{req_id}, body}``;
answers carry no ``cmd`` but ``errcode``):

- after the open we send ``aibot_subscribe`` ``{bot_id, secret}`` and wait for its
  errcode-0 answer (timeout → reconnect);
- every 30 s an application ``ping``; two unanswered in a row → the connection is dead →
  reconnect. WebSocket protocol pings from the server are answered by the library;
- ``aibot_msg_callback`` / ``aibot_event_callback`` carry a message or an event. Each is
  durably queued (``Inbox.accept_aibot``, dedup on msgid) *before the next frame is read*:
  nothing counts as received until its enqueue has committed, and a message WeCom sends
  again after a reconnect is a duplicate of the queued one. WeCom expects no receipt for a
  callback (the official SDKs send none: aibot/ws.py ``_handle_frame`` in
  wecom-aibot-python-sdk 1.0.2, NODE src/ws.ts), so "then ack" is exactly this ordering: if
  the enqueue fails the connection is closed and re-opened, never read past;
- a reply echoes the inbound ``req_id``: ``aibot_respond_msg``. The worker puts
  ``{"req_id", "body"}`` items on the reply queue (``bot.aibot.WS_REPLY_QUEUE``); this
  process claims them, sends each and waits ≤ 5 s for its answer before acking the item,
  so a crash re-delivers (at least once: an answer lost with the connection means a resend;
  a stream reply is a full snapshot under one stream id, so a resend shows the same text).
  errcode 846605 (invalid req_id) / 846608 (stream expired) → logged and dead-lettered;
  other failures are retried a bounded number of times;
- ``disconnected_event`` (another connection for this bot took over) is logged; by default
  the client then stops rather than take the bot back, since two clients that kick each
  other in turn would both lose messages (``on_kick="reconnect"`` keeps going).

Reconnects back off exponentially from 1 s to 30 s with jitter, and start over from 1 s
after a successful subscribe.

**One connection per bot.** WeCom is reported to keep one live connection per bot and to
kick the other with ``disconnected_event`` (UNCONFIRMED, WECOM.md §1.4). Two ``mingpian aibot connect`` processes of one deployment must not do that to each
other, so the connection is held under a lease in the store (:class:`BotLease`): a record
``aibot.lease/<bot_id>`` with a TTL (a Redis key expiry on Redis, so clocks of different
machines do not matter), taken and renewed under the store's short lock and renewed every
third of its TTL while the process lives. A second process waits as a standby and takes over
once the first stops or dies (after at most one TTL). A process that failed to renew in time
(paused longer than the TTL) drops its connection as soon as it notices; if WeCom kicks it
first, for the standby's new connection, it sees the lease gone to that process and stands
by instead of exiting.

**Library.** ``websockets`` (asyncio API), not the official ``wecom-aibot-python-sdk``
1.0.2, which was read for this: its callbacks are synchronous (an async durable enqueue
cannot hold back the next frame), it has no timeout on the subscribe answer, its backoff has
no jitter and gives up after 10 attempts, each reconnect recurses one coroutine deeper, it
ships no type information (``py.typed``) and pulls aiohttp and pyee. The frame handling here
follows it and the Node SDK, which it ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from models.errors import BadRequestError
from store import Store
from store.base import JSON, QueueItem

log = logging.getLogger("mingpian.aibot.ws")

DEFAULT_WS_URL: Final = "wss://openws.work.weixin.qq.com"  # NODE src/ws.ts DEFAULT_WS_URL

# Commands (WECOM.md §1.7, NODE WsCmd).
CMD_SUBSCRIBE: Final = "aibot_subscribe"
CMD_PING: Final = "ping"
CMD_MSG_CALLBACK: Final = "aibot_msg_callback"
CMD_EVENT_CALLBACK: Final = "aibot_event_callback"
CMD_RESPOND: Final = "aibot_respond_msg"
EVENT_DISCONNECTED: Final = "disconnected_event"  # WS only: kicked by another connection
# Reply answers that will never succeed however often we resend: 846605 invalid req_id,
# 846608 stream message update expired (> 6 min) (WECOM.md §1.7, observed errcodes).
DROP_ERRCODES: Final = frozenset({846605, 846608})

LEASE_NS: Final = "aibot.lease"

# What hands a callback body on: durably queue it, return False for a repeat (the CLI
# passes Inbox.accept_aibot with channel "ws").
Accept = Callable[[JSON, str], Awaitable[bool]]


@dataclass(frozen=True)
class WsTiming:
    """The connection's intervals and limits (parameters so tests can shrink them)."""

    ping_interval_s: float = 30.0  # NODE ws.ts heartbeatInterval = 30000
    max_missed_pongs: int = 2  # NODE ws.ts maxMissedPong = 2
    subscribe_timeout_s: float = 10.0  # LB-WS _wait_for_auth: 10 s
    reply_ack_timeout_s: float = 5.0  # NODE ws.ts replyAckTimeout = 5000
    backoff_base_s: float = 1.0  # NODE README: 1 s → … → 30 s
    backoff_cap_s: float = 30.0
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    lease_ttl_s: int = 60
    reply_poll_s: float = 0.2  # how often an idle reply queue is looked at
    reply_visibility_s: float = 30.0  # a claimed reply comes back after this if we die
    reply_max_attempts: int = 5


class RunEnd(StrEnum):
    """Why :meth:`AibotWsClient.run` returned."""

    STOPPED = "stopped"  # the stop event was set
    KICKED = "kicked"  # a disconnected_event, with on_kick="stop"


class _Lost(Exception):
    """The connection is to be dropped and opened again."""


class _Kicked(Exception):
    """WeCom sent disconnected_event: another connection took the bot."""


class LeaseBusyError(Exception):
    """The store's lock around the lease could not be had in time (not a lost lease)."""


class SubscribeRejectedError(Exception):
    """WeCom answered aibot_subscribe with a non-zero errcode (bad bot id or secret?)."""

    def __init__(self, errcode: object, errmsg: object) -> None:
        super().__init__(f"aibot_subscribe refused: errcode={errcode} errmsg={errmsg}")
        self.errcode = errcode


def backoff_delays(*, base_s: float, cap_s: float,
                   rng: random.Random | None = None) -> Iterator[float]:
    """Yield reconnect pauses: exponential from base_s up to cap_s, each drawn from the
    upper half of its step ("equal jitter"), so clients cut off together do not return
    together and a pause never shrinks to nothing."""
    draw = rng or random.Random()
    n = 0
    while True:
        ceiling = min(cap_s, base_s * 2 ** min(n, 30))
        yield draw.uniform(ceiling / 2, ceiling)
        n += 1


def new_req_id(prefix: str) -> str:
    """Return a fresh req_id for our own frames: "<prefix>_<ms>_<random>" (NODE utils)."""
    return f"{prefix}_{int(time.time() * 1000)}_{secrets.token_hex(4)}"


def parse_frame(raw: str | bytes) -> JSON | None:
    """Return a frame as a JSON object, or None when it is not one."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def frame_req_id(frame: JSON) -> str:
    """Return headers.req_id of a frame ("" when absent)."""
    headers = frame.get("headers")
    req_id = headers.get("req_id") if isinstance(headers, dict) else None
    return req_id if isinstance(req_id, str) else ""


def _event_type(body: JSON) -> str:
    event = body.get("event")
    kind = event.get("eventtype") if isinstance(event, dict) else None
    return kind if isinstance(kind, str) else ""


def process_owner() -> str:
    """Return a name for this process, unique across machines: host, pid and a nonce."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class BotLease:
    """One holder per bot among every process sharing a store (see the module docstring).

    The lease is a record with a TTL; reads and writes of it happen under the store's lock,
    so two processes never both find it free. Store calls are blocking (run them off the
    event loop).
    """

    def __init__(self, store: Store, *, bot_id: str, owner: str, ttl_s: int) -> None:
        if ttl_s < 1:
            raise ValueError("lease ttl_s must be at least 1 second")
        self.store = store
        self.bot_id = bot_id
        self.owner = owner
        self.ttl_s = ttl_s

    def _doc(self) -> JSON:
        return {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                "renewed_at": int(time.time())}

    def holder(self) -> JSON | None:
        """Return the current holder's record (owner, host, pid), or None when free."""
        rec = self.store.get(LEASE_NS, self.bot_id)
        return rec.doc if rec is not None else None

    def acquire(self) -> bool:
        """Take the lease if it is free or already ours; return whether we hold it now.
        Raises LeaseBusyError when the store's lock could not be had (try again)."""
        return self._write(take_free=True)

    def renew(self) -> bool:
        """Extend our lease by a TTL; return False when it is no longer ours (it expired,
        and perhaps another process took it). Raises LeaseBusyError as acquire does."""
        return self._write(take_free=False)

    def _write(self, *, take_free: bool) -> bool:
        with self.store.lock(f"{LEASE_NS}:{self.bot_id}", ttl_s=5.0, wait_s=2.0) as got:
            if not got:
                raise LeaseBusyError(f"the lease of bot {self.bot_id} is busy")
            current = self.holder()
            mine = current is not None and current.get("owner") == self.owner
            if not mine and not (take_free and current is None):
                return False
            self.store.put(LEASE_NS, self.bot_id, self._doc(), ttl_s=self.ttl_s)
            return True

    def release(self) -> None:
        """Give the lease up if we hold it (a standby takes over at once)."""
        with self.store.lock(f"{LEASE_NS}:{self.bot_id}", ttl_s=5.0, wait_s=2.0) as got:
            current = self.holder() if got else None
            if current is not None and current.get("owner") == self.owner:
                self.store.delete(LEASE_NS, self.bot_id)


@dataclass
class ConnStats:
    """Counts since the client started (read by tests and the final log line)."""

    connects: int = 0  # successful subscribes
    received: int = 0  # callbacks queued (first time)
    duplicates: int = 0  # callbacks already queued (a resend)
    replies_sent: int = 0  # replies answered with errcode 0
    replies_dropped: int = 0  # replies dead-lettered (846605/846608 or malformed)
    dead_connections: int = 0  # connections given up for missed pongs


class _Session:
    """The state of one open, subscribed connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.missed_pongs = 0
        self.waiting: dict[str, asyncio.Future[JSON]] = {}

    async def send(self, frame: JSON) -> None:
        await self.ws.send(json.dumps(frame, ensure_ascii=False, separators=(",", ":")))

    def expect(self, req_id: str) -> asyncio.Future[JSON]:
        fut: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
        self.waiting[req_id] = fut
        return fut


class AibotWsClient:
    """The long-connection client of one bot: run() until stopped (or kicked)."""

    def __init__(  # noqa: PLR0913  keyword-only wiring, each named at the call site
        self, *, url: str, bot_id: str, secret: str, accept: Accept, store: Store,
        reply_queue: str, timing: WsTiming | None = None, owner: str | None = None,
        on_kick: Literal["stop", "reconnect"] = "stop", rng: random.Random | None = None,
        proxy: str | Literal[True] | None = True,
    ) -> None:
        if not bot_id or not secret:
            raise ValueError("the long connection needs the bot id and secret")
        self.url = url
        self.bot_id = bot_id
        self._secret = secret
        self.accept = accept
        self.store = store
        self.reply_queue = reply_queue
        self.timing = timing or WsTiming()
        self.owner = owner or process_owner()
        self.on_kick = on_kick
        self.rng = rng or random.Random()
        self.proxy = proxy  # True: the environment's HTTPS_PROXY / NO_PROXY (websockets)
        self.lease = BotLease(store, bot_id=bot_id, owner=self.owner,
                              ttl_s=self.timing.lease_ttl_s)
        self.stats = ConnStats()

    # -- the outer loop: lease, then connections ---------------------------------------
    async def run(self, stop: asyncio.Event) -> RunEnd:
        """Hold the bot's lease and keep one subscribed connection open until stop is set;
        return why it ended."""
        try:
            while not stop.is_set():
                if not await self._wait_for_lease(stop):
                    return RunEnd.STOPPED
                end = await self._while_leased(stop)
                if end is not None:
                    return end
            return RunEnd.STOPPED
        finally:
            with contextlib.suppress(Exception):  # the TTL frees it anyway
                await asyncio.to_thread(self.lease.release)

    async def _wait_for_lease(self, stop: asyncio.Event) -> bool:
        told = False
        while not stop.is_set():
            try:
                if await asyncio.to_thread(self.lease.acquire):
                    log.info("bot %s: lease taken by %s", self.bot_id, self.owner)
                    return True
                holder = await asyncio.to_thread(self.lease.holder)
            except Exception as e:  # noqa: BLE001 - the store is down: wait, never spin
                log.warning("bot %s: lease not available (%r); trying again", self.bot_id, e)
                holder = None
            if not told and holder is not None:
                log.warning("bot %s is connected by %s (pid %s on %s): standing by to take "
                            "over", self.bot_id, holder.get("owner"), holder.get("pid"),
                            holder.get("host"))
                told = True
            await _sleep_or_stop(stop, self.timing.lease_ttl_s / 3)
        return False

    async def _while_leased(self, stop: asyncio.Event) -> RunEnd | None:
        """Connect and reconnect while the lease is ours; None when it was lost."""
        lost = asyncio.Event()
        renewer = asyncio.create_task(self._renew_lease(stop, lost))
        try:
            return await self._connect_loop(stop, lost)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _renew_lease(self, stop: asyncio.Event, lost: asyncio.Event) -> None:
        every = self.timing.lease_ttl_s / 3
        while not stop.is_set():
            await _sleep_or_stop(stop, every)
            try:
                ok = await asyncio.to_thread(self.lease.renew)
            except Exception as e:  # noqa: BLE001 - a store hiccup; the next renewal may work
                log.warning("bot %s: lease renewal failed (%r)", self.bot_id, e)
                continue
            if not ok:
                log.error("bot %s: lease lost (not renewed within %d s); dropping the "
                          "connection", self.bot_id, self.timing.lease_ttl_s)
                lost.set()
                return

    async def _connect_loop(self, stop: asyncio.Event, lost: asyncio.Event) -> RunEnd | None:
        t = self.timing
        delays = backoff_delays(base_s=t.backoff_base_s, cap_s=t.backoff_cap_s, rng=self.rng)
        while True:
            if stop.is_set():
                return RunEnd.STOPPED
            if lost.is_set():
                return None
            subscribed = asyncio.Event()
            try:
                await self._session(stop, lost, subscribed)
            except _Kicked:
                log.warning("bot %s: disconnected_event: another connection took this bot",
                            self.bot_id)
                if await self._lease_moved():
                    return None  # our own standby took over (we were paused): stand by
                if self.on_kick == "stop":
                    log.warning("bot %s: not reconnecting (two clients would kick each "
                                "other in turn); start it again once the other is gone",
                                self.bot_id)
                    return RunEnd.KICKED
            except _Lost as e:
                log.warning("bot %s: connection dropped: %s", self.bot_id, e)
            except (OSError, WebSocketException, TimeoutError, SubscribeRejectedError) as e:
                log.warning("bot %s: connection failed: %r", self.bot_id, e)
            except Exception:  # a store failure mid-frame, or a bug: reconnect, never die
                log.exception("bot %s: connection ended by an error", self.bot_id)
            if subscribed.is_set():
                delays = backoff_delays(base_s=t.backoff_base_s, cap_s=t.backoff_cap_s,
                                        rng=self.rng)
            if stop.is_set():
                return RunEnd.STOPPED
            pause = next(delays)
            log.info("bot %s: reconnecting in %.1f s", self.bot_id, pause)
            await _sleep_or_stop(stop, pause, also=lost)

    async def _lease_moved(self) -> bool:
        """Return whether another process of this deployment holds the lease now."""
        try:
            holder = await asyncio.to_thread(self.lease.holder)
        except Exception:  # noqa: BLE001 - unknown: treat the kick as from outside
            return False
        return holder is not None and holder.get("owner") != self.owner

    # -- one connection ----------------------------------------------------------------
    async def _session(self, stop: asyncio.Event, lost: asyncio.Event,
                       subscribed: asyncio.Event) -> None:
        t = self.timing
        # ping_interval=None: the heartbeat is WeCom's application ping below; the library
        # still answers the server's protocol pings with pongs.
        async with connect(self.url, ping_interval=None, ping_timeout=None,
                           open_timeout=t.open_timeout_s, close_timeout=t.close_timeout_s,
                           max_size=4 * 1024 * 1024, proxy=self.proxy) as ws:
            session = _Session(ws)
            await self._subscribe(session)
            subscribed.set()
            self.stats.connects += 1
            log.info("bot %s: subscribed (connection %d)", self.bot_id, self.stats.connects)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._read(session))
                    tg.create_task(self._heartbeat(session))
                    tg.create_task(self._send_replies(session))
                    tg.create_task(self._until(stop, lost))
            except ExceptionGroup as eg:
                end = _session_end(eg)
                if end is not None:
                    raise end from None

    async def _subscribe(self, session: _Session) -> None:
        req_id = new_req_id(CMD_SUBSCRIBE)
        await session.send({"cmd": CMD_SUBSCRIBE, "headers": {"req_id": req_id},
                            "body": {"bot_id": self.bot_id, "secret": self._secret}})
        async with asyncio.timeout(self.timing.subscribe_timeout_s):
            async for raw in session.ws:
                frame = parse_frame(raw)
                if frame is None or frame_req_id(frame) != req_id:
                    log.warning("bot %s: frame before the subscribe answer ignored",
                                self.bot_id)
                    continue
                if frame.get("errcode") != 0:
                    raise SubscribeRejectedError(frame.get("errcode"), frame.get("errmsg"))
                return
        raise _Lost("closed before the subscribe answer")

    async def _until(self, stop: asyncio.Event, lost: asyncio.Event) -> None:
        await _first(stop, lost)
        if lost.is_set():
            raise _Lost("lease lost")
        raise _Stopping

    async def _read(self, session: _Session) -> None:
        async for raw in session.ws:
            frame = parse_frame(raw)
            if frame is None:
                log.warning("bot %s: a frame that is not a JSON object ignored", self.bot_id)
                continue
            await self._on_frame(session, frame)
        raise _Lost("closed by the server")

    async def _on_frame(self, session: _Session, frame: JSON) -> None:
        cmd = frame.get("cmd")
        req_id = frame_req_id(frame)
        if cmd in (CMD_MSG_CALLBACK, CMD_EVENT_CALLBACK):
            body = frame.get("body")
            if not isinstance(body, dict):
                log.warning("bot %s: %s without a body ignored", self.bot_id, cmd)
                return
            if cmd == CMD_EVENT_CALLBACK and _event_type(body) == EVENT_DISCONNECTED:
                raise _Kicked
            await self._take(body, req_id)
            return
        if cmd is not None:
            log.info("bot %s: unexpected command %r ignored", self.bot_id, str(cmd)[:48])
            return
        # An answer to one of our frames.
        waiter = session.waiting.pop(req_id, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(frame)
        elif req_id.startswith(CMD_PING + "_"):
            if frame.get("errcode") == 0:
                session.missed_pongs = 0
            else:
                log.warning("bot %s: ping answered errcode=%s", self.bot_id,
                            frame.get("errcode"))
        else:
            log.debug("bot %s: answer to an unknown req_id ignored", self.bot_id)

    async def _take(self, body: JSON, req_id: str) -> None:
        """Durably queue one callback before anything else is read (see the docstring)."""
        try:
            fresh = await self.accept(body, req_id)
        except BadRequestError as e:  # no msgid: it cannot be deduplicated, so not queued
            log.warning("bot %s: callback refused: %s", self.bot_id, e)
            return
        if fresh:
            self.stats.received += 1
        else:
            self.stats.duplicates += 1
        log.info("bot %s: %s %s msgid=%s", self.bot_id, "queued" if fresh else "duplicate",
                 str(body.get("msgtype"))[:16], str(body.get("msgid"))[:64])

    async def _heartbeat(self, session: _Session) -> None:
        t = self.timing
        while True:
            await asyncio.sleep(t.ping_interval_s)
            if session.missed_pongs >= t.max_missed_pongs:
                self.stats.dead_connections += 1
                raise _Lost(f"{session.missed_pongs} pings unanswered")
            session.missed_pongs += 1
            await session.send({"cmd": CMD_PING, "headers": {"req_id": new_req_id(CMD_PING)}})

    # -- replies -----------------------------------------------------------------------
    async def _send_replies(self, session: _Session) -> None:
        t = self.timing
        while True:
            items = await asyncio.to_thread(
                self.store.claim, self.reply_queue, consumer=self.owner, max_items=16,
                visibility_s=t.reply_visibility_s)
            if not items:
                await asyncio.sleep(t.reply_poll_s)
                continue
            for n, item in enumerate(items):
                try:
                    settled = await self._send_reply(session, item)
                except BaseException:
                    # The connection ended (or we were stopped) with this reply in flight:
                    # it and the rest go back on the queue now, in order, rather than after
                    # the visibility timeout.
                    self._release(items[n:], "the connection ended before its answer")
                    raise
                if not settled:
                    self._release(items[n + 1:], "an earlier reply failed")
                    break

    async def _send_reply(self, session: _Session, item: QueueItem) -> bool:
        """Send one reply and wait for its answer; ack, drop or retry the item; return False
        when it is to be retried (the rest of its batch then waits, to keep the order)."""
        req_id, body = item.payload.get("req_id"), item.payload.get("body")
        if not isinstance(req_id, str) or not req_id or not isinstance(body, dict):
            self._drop(item, "malformed reply item: needs req_id and body")
            return True
        answer = session.expect(req_id)
        try:
            await session.send({"cmd": CMD_RESPOND, "headers": {"req_id": req_id},
                                "body": body})
            async with asyncio.timeout(self.timing.reply_ack_timeout_s):
                frame = await answer
        except TimeoutError:
            self._retry(item, f"no answer within {self.timing.reply_ack_timeout_s:g} s")
            return False
        finally:
            session.waiting.pop(req_id, None)
        errcode = frame.get("errcode")
        if errcode == 0:
            await asyncio.to_thread(self.store.ack, self.reply_queue, [item.id])
            self.stats.replies_sent += 1
            return True
        if errcode in DROP_ERRCODES:
            self._drop(item, f"errcode={errcode} errmsg={frame.get('errmsg')}")
            return True
        self._retry(item, f"errcode={errcode} errmsg={frame.get('errmsg')}")
        return False

    def _drop(self, item: QueueItem, why: str) -> None:
        log.warning("bot %s: reply %s dropped (dead-lettered): %s", self.bot_id, item.id, why)
        self.store.fail(self.reply_queue, item, error=why, max_attempts=item.attempts)
        self.stats.replies_dropped += 1

    def _retry(self, item: QueueItem, why: str) -> None:
        if self.store.fail(self.reply_queue, item, error=why,
                           max_attempts=self.timing.reply_max_attempts):
            log.error("bot %s: reply %s dead-lettered after %d attempts: %s", self.bot_id,
                      item.id, item.attempts, why)
            self.stats.replies_dropped += 1
        else:
            log.warning("bot %s: reply %s to be sent again: %s", self.bot_id, item.id, why)

    def _release(self, items: list[QueueItem], why: str) -> None:
        """Hand claimed replies back unsent (no attempt is held against them)."""
        for item in items:
            self.store.fail(self.reply_queue, item, error=why, max_attempts=item.attempts + 1)


class _Stopping(Exception):
    """The stop event was set: close the connection cleanly."""


def _session_end(group: ExceptionGroup[Exception]) -> Exception | None:
    """Return why a connection's tasks ended (None: stopped), or raise the group when one
    of them failed in a way we did not expect. A kick outranks a lost connection, which
    outranks a stop."""
    kicked, rest = group.split(_Kicked)
    if kicked is not None:
        return _Kicked()
    lost, rest = group.split((_Lost, ConnectionClosed))
    if lost is not None:
        first = lost.exceptions[0]
        while isinstance(first, ExceptionGroup):
            first = first.exceptions[0]
        return first if isinstance(first, _Lost) else _Lost(f"closed ({first})")
    if rest is not None:
        _, unexpected = rest.split(_Stopping)
        if unexpected is not None:
            raise unexpected
    return None


async def _first(*events: asyncio.Event) -> None:
    """Return once any of the events is set."""
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float, *,
                         also: asyncio.Event | None = None) -> None:
    """Sleep for seconds, or less when stop (or also) is set."""
    events = [stop] if also is None else [stop, also]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await _first(*events)
