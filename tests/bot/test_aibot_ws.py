"""Issue 14 point 3: the AI bot's long connection against a local stand-in of WeCom's
WebSocket server (tests/bot/ws_standin.py), real sockets, a real store.

The client runs in a thread of this process (its counters are then readable) or as a real
`mingpian aibot connect` subprocess. Intervals are shrunk through parameters; nothing here
asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.services import INBOX, Services, build_services
from bot.aibot import WS_REPLY_QUEUE
from bot.aibot_ws import (
    LEASE_NS,
    AibotWsClient,
    BotLease,
    RunEnd,
    WsTiming,
    backoff_delays,
)
from bot.inbox import Inbox
from store import Store
from store.base import JSON
from tests.bot.support import bot_settings, drain
from tests.bot.ws_standin import AibotWsStandin, wait_until

BOT_ID = "aib-test-bot"
SECRET = "ws-secret-1234567890"
GROUP = "g-ws-01"

# Short enough for a quick test, long enough that a busy machine does not make a healthy
# connection look dead (a needless reconnect would not lose anything, but the counts below
# would differ).
FAST = WsTiming(ping_interval_s=0.5, max_missed_pongs=2, subscribe_timeout_s=5.0,
                reply_ack_timeout_s=5.0, backoff_base_s=0.05, backoff_cap_s=0.4,
                open_timeout_s=5.0, close_timeout_s=0.5, lease_ttl_s=3, reply_poll_s=0.05)


def aibot_text(msgid: str, text: str, *, user: str = "u-3001") -> JSON:
    """A group message callback body that @-mentions the bot (WECOM.md §1.3)."""
    return {"msgid": msgid, "aibotid": BOT_ID, "chatid": GROUP, "chattype": "group",
            "from": {"userid": user}, "msgtype": "text",
            "text": {"content": f"@名片助手 {text}"}}


class ClientThread:
    """An AibotWsClient running on its own event loop in a thread."""

    def __init__(self, client: AibotWsClient) -> None:
        self.client = client
        self.result: RunEnd | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aibot-ws-client")

    def _run(self) -> None:
        self.result = asyncio.run(self._main())

    async def _main(self) -> RunEnd:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        return await self.client.run(self._stop)

    def start(self) -> ClientThread:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> RunEnd | None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the client did not stop"
        return self.result

    def join(self) -> RunEnd | None:
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the client did not end by itself"
        return self.result


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """The real services (SQLite, the hash embedder) whose worker path applies messages."""
    s = build_services(bot_settings(tmp_path / "data"))
    yield s
    s.close()


@pytest.fixture
def standin() -> Iterator[AibotWsStandin]:
    with AibotWsStandin(bot_id=BOT_ID, secret=SECRET) as s:
        yield s


def make_client(store: Store, url: str, *, inbox: Inbox, secret: str = SECRET,
                **kwargs: Any) -> AibotWsClient:
    async def accept(body: JSON, req_id: str) -> bool:
        return await inbox.accept_aibot(body, channel="ws", req_id=req_id)

    return AibotWsClient(url=url, bot_id=BOT_ID, secret=secret, accept=accept, store=store,
                         reply_queue=WS_REPLY_QUEUE, timing=kwargs.pop("timing", FAST),
                         rng=random.Random(7), proxy=None, **kwargs)


def _new_connection(standin: AibotWsStandin, after: int) -> None:
    wait_until(lambda: standin.current_number() > after, what="the client to reconnect")


def test_point3_survives_a_dropped_connection_and_a_missed_pong(
        services: Services, standin: AibotWsStandin) -> None:
    """The done-when line: a drop mid-stream and a missed pong, with WeCom resending after
    each reconnect; every message is queued once and applied to the profile once."""
    store = services.store
    inbox = Inbox(store, queue=INBOX, dedup_ttl_s=7 * 86_400)
    client = make_client(store, standin.url, inbox=inbox)
    runner = ClientThread(client).start()
    try:
        wait_until(standin.is_connected, what="the first subscribe")
        assert standin.snapshot().subscribes == [{"bot_id": BOT_ID, "ok": True}]
        assert standin.protocol_ping()  # WebSocket protocol pings are answered
        first = standin.current_number()

        standin.push(aibot_text("ws-m1", "宝宝湿疹用什么好"))
        standin.push(aibot_text("ws-m2", "六个月宝宝辅食先加什么"))
        wait_until(lambda: store.queue_depth(INBOX) == 2, what="m1 and m2 queued")

        # Mid-stream: m3 goes out and the TCP connection is cut at once (no close frame).
        standin.push(aibot_text("ws-m3", "宝宝便秘怎么办"), then_drop=True)
        _new_connection(standin, first)
        second = standin.current_number()
        # WeCom resends what it cannot know was received, and goes on.
        standin.push(aibot_text("ws-m2", "六个月宝宝辅食先加什么"))
        standin.push(aibot_text("ws-m3", "宝宝便秘怎么办"))
        standin.push(aibot_text("ws-m4", "纸尿裤哪个牌子好"))
        wait_until(lambda: store.queue_depth(INBOX) == 4, what="m3 and m4 queued")

        # The server stops answering pings: after two missed pongs the client gives up on
        # this connection and opens another.
        standin.mute_pings()
        _new_connection(standin, second)
        standin.push(aibot_text("ws-m4", "纸尿裤哪个牌子好"))
        standin.push(aibot_text("ws-m5", "宝宝出牙发烧正常吗"))
        wait_until(lambda: client.stats.received + client.stats.duplicates >= 7,
                   what="the resends seen")
        wait_until(lambda: store.queue_depth(INBOX) == 5, what="m5 queued")
    finally:
        assert runner.stop() is RunEnd.STOPPED
        inbox.close()

    assert client.stats.received == 5
    assert client.stats.duplicates >= 2  # m2, m4 (and m3 when it arrived before the cut)
    assert client.stats.dead_connections == 1
    seen = standin.snapshot()
    assert seen.connections == 3
    assert seen.max_active == 1
    assert all(s["ok"] for s in seen.subscribes)
    assert store.queue_depth(INBOX) == 5  # five distinct messages, each queued once

    # The real worker path: each message reaches the member's profile exactly once.
    drain(services)
    profile = services.profiles.get("user", "u-3001")
    assert profile is not None and profile.message_count == 5
    group = services.profiles.get("group", GROUP)
    assert group is not None and group.message_count == 5
    # The lease went with the client.
    assert store.get(LEASE_NS, BOT_ID) is None


def test_point3_replies_echo_req_id_once_and_refusals_are_dead_lettered(
        services: Services, standin: AibotWsStandin) -> None:
    """What the worker puts on WS_REPLY_QUEUE goes out as aibot_respond_msg echoing the
    inbound req_id, once; 846605 is dead-lettered, not resent; another refusal is retried."""
    store = services.store
    inbox = Inbox(store, queue=INBOX, dedup_ttl_s=7 * 86_400)
    client = make_client(store, standin.url, inbox=inbox)
    runner = ClientThread(client).start()
    try:
        wait_until(standin.is_connected, what="the subscribe")
        req = [standin.push(aibot_text(f"ws-r{i}", "防晒霜推荐一下", user=f"u-31{i:02d}"))
               for i in range(4)]
        wait_until(lambda: store.queue_depth(INBOX) == 4, what="four messages queued")
        standin.reply_errcodes[req[1]] = 846605  # invalid req_id: never valid again
        standin.reply_errcodes[req[2]] = 600039  # some other refusal: worth a second try
        bodies = {r: {"msgtype": "stream", "stream": {"id": f"s-{r}", "finish": True,
                                                      "content": f"为你推荐 {r}"}}
                  for r in req}
        for r in req:
            store.enqueue(WS_REPLY_QUEUE, {"req_id": r, "body": bodies[r]})
        store.enqueue(WS_REPLY_QUEUE, {"body": {"msgtype": "stream"}})  # no req_id
        wait_until(lambda: store.queue_depth(WS_REPLY_QUEUE) == 0, what="replies sent")
    finally:
        runner.stop()
        inbox.close()

    sent = standin.snapshot().replies
    by_req: dict[str, list[JSON]] = {}
    for frame in sent:
        assert frame["cmd"] == "aibot_respond_msg"
        by_req.setdefault(frame["headers"]["req_id"], []).append(frame["body"])
    assert by_req[req[0]] == [bodies[req[0]]]  # exactly once, body as queued
    assert by_req[req[3]] == [bodies[req[3]]]
    assert by_req[req[1]] == [bodies[req[1]]]  # refused with 846605: not sent again
    assert by_req[req[2]] == [bodies[req[2]]] * 2  # refused once, then accepted
    assert set(by_req) == set(req)
    assert client.stats.replies_sent == 3
    dead = store.dead_letters(WS_REPLY_QUEUE)
    assert sorted(str(d["payload"].get("req_id")) for d in dead) == sorted([req[1], "None"])
    assert any("846605" in str(d["error"]) for d in dead)


def test_point3_disconnected_event_stops_the_client_and_frees_the_lease(
        services: Services, standin: AibotWsStandin) -> None:
    store = services.store
    inbox = Inbox(store, queue=INBOX, dedup_ttl_s=7 * 86_400)
    runner = ClientThread(make_client(store, standin.url, inbox=inbox)).start()
    try:
        wait_until(standin.is_connected, what="the subscribe")
        assert store.get(LEASE_NS, BOT_ID) is not None
        standin.kick()
        assert runner.join() is RunEnd.KICKED
    finally:
        runner.stop()
        inbox.close()
    assert standin.snapshot().connections == 1  # it did not fight back
    assert store.get(LEASE_NS, BOT_ID) is None
    assert store.queue_depth(INBOX) == 0  # the kick is not a member's message


def test_point3_disconnected_event_with_reconnect_reconnects(
        services: Services, standin: AibotWsStandin) -> None:
    store = services.store
    inbox = Inbox(store, queue=INBOX, dedup_ttl_s=7 * 86_400)
    runner = ClientThread(make_client(store, standin.url, inbox=inbox,
                                      on_kick="reconnect")).start()
    try:
        wait_until(standin.is_connected, what="the subscribe")
        first = standin.current_number()
        standin.kick()
        _new_connection(standin, first)
    finally:
        assert runner.stop() is RunEnd.STOPPED
        inbox.close()


def test_point3_kicked_after_our_own_standby_took_the_lease_stands_by(
        services: Services, standin: AibotWsStandin) -> None:
    """A process paused past its lease finds, when WeCom kicks it, that another process of
    this deployment holds the bot now: it stands by instead of exiting, and takes the bot
    back once that one lets go."""
    store = services.store
    inbox = Inbox(store, queue=INBOX, dedup_ttl_s=7 * 86_400)
    runner = ClientThread(make_client(store, standin.url, inbox=inbox)).start()
    try:
        wait_until(standin.is_connected, what="the subscribe")
        first = standin.current_number()
        store.put(LEASE_NS, BOT_ID, {"owner": "standby-elsewhere", "pid": 1, "host": "h"},
                  ttl_s=60)
        standin.kick()
        wait_until(lambda: not standin.is_connected(), what="the kicked connection to close")
        store.delete(LEASE_NS, BOT_ID)  # the other one stops
        _new_connection(standin, first)
        lease = store.get(LEASE_NS, BOT_ID)
        assert lease is not None and lease.doc["owner"] == runner.client.owner
    finally:
        assert runner.stop() is RunEnd.STOPPED
        inbox.close()


def test_point3_refused_subscribe_is_retried_and_nothing_is_read(
        services: Services, standin: AibotWsStandin) -> None:
    store = services.store
    inbox = Inbox(store, queue=INBOX, dedup_ttl_s=7 * 86_400)
    runner = ClientThread(make_client(store, standin.url, inbox=inbox,
                                      secret="wrong-secret")).start()
    try:
        wait_until(lambda: len(standin.snapshot().subscribes) >= 3,
                   what="three subscribe attempts")
    finally:
        assert runner.stop() is RunEnd.STOPPED
        inbox.close()
    seen = standin.snapshot()
    assert not any(s["ok"] for s in seen.subscribes)
    assert seen.connections == 0


def test_point3_lease_one_holder_then_a_standby_takes_over(services: Services) -> None:
    store = services.store
    a = BotLease(store, bot_id=BOT_ID, owner="a", ttl_s=60)
    b = BotLease(store, bot_id=BOT_ID, owner="b", ttl_s=60)
    assert a.acquire()
    assert not b.acquire()
    assert a.renew()
    assert not b.renew()
    holder = b.holder()
    assert holder is not None and holder["owner"] == "a"
    b.release()  # not b's to give up
    assert not b.acquire()
    a.release()
    assert b.acquire()
    assert not a.renew()  # a lost it: renewing does not take it back


def test_point3_backoff_doubles_to_the_cap_with_jitter() -> None:
    delays = backoff_delays(base_s=1.0, cap_s=30.0, rng=random.Random(1))
    got = [next(delays) for _ in range(8)]
    ceilings = [1, 2, 4, 8, 16, 30, 30, 30]
    assert all(c / 2 <= d <= c for d, c in zip(got, ceilings, strict=True))
    assert len(set(got)) == len(got)  # jittered, not a fixed ladder
