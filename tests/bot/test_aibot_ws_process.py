"""Issue 14 point 3 with real processes: `mingpian aibot connect` on Redis, one connection
per bot (a second process stands by and takes over after a SIGKILL), the real worker path
applying what arrived and its reply going back over the long connection, once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from app.services import INBOX, build_services
from bot.aibot import WS_REPLY_QUEUE
from bot.aibot_ws import LEASE_NS
from store.redis import RedisStore
from tests.bot.support import bot_settings, drain, load_demo_catalog
from tests.bot.test_aibot_ws import BOT_ID, GROUP, SECRET, aibot_text
from tests.bot.ws_standin import AibotWsStandin, wait_until

# Pings are not what this test is about: slow enough that the worker hogging this process
# (the stand-in's thread waits on it) never makes a connection look dead.
FAST_ARGS = ("--ping-interval", "5", "--backoff-base", "0.05", "--backoff-cap", "0.4",
             "--lease-ttl", "2")


class Connector:
    """A `mingpian aibot connect` subprocess, its output in files."""

    def __init__(self, tmp_path: Path, name: str, env: dict[str, str]) -> None:
        self.out_path = tmp_path / f"{name}.out"
        self.err_path = tmp_path / f"{name}.err"
        self._out: IO[bytes] = self.out_path.open("wb")
        self._err: IO[bytes] = self.err_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "aibot", "connect", *FAST_ARGS],
            cwd=tmp_path, env=env, stdout=self._out, stderr=self._err)

    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def finish(self, sig: int) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self._out.close()
        self._err.close()
        return code


def _apply_with_worker(data_dir: Path, redis_url: str) -> None:
    """Run the real worker path over the shared Redis until the inbox is empty; check that
    each of the two messages reached the member's and the group's profile once."""
    settings = bot_settings(data_dir, redis_url=redis_url,
                            reply={"quiet_start_hour": 0, "quiet_end_hour": 0},
                            wecom_aibot={"bot_id": BOT_ID, "secret": SECRET})
    services = build_services(settings)
    try:
        load_demo_catalog(services)
        drain(services)
        profile = services.profiles.get("user", "u-3001")
        assert profile is not None and profile.message_count == 2
        group = services.profiles.get("group", GROUP)
        assert group is not None and group.message_count == 2
    finally:
        services.close()


@pytest.fixture
def standin() -> Iterator[AibotWsStandin]:
    with AibotWsStandin(bot_id=BOT_ID, secret=SECRET) as s:
        yield s


def test_point3_connect_processes_one_per_bot_no_loss_reply_once(
        tmp_path: Path, clean_redis_url: str, standin: AibotWsStandin) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MINGPIAN_") and not k.lower().endswith("_proxy")}
    env |= {"MINGPIAN_DATA_DIR": str(tmp_path / "data"), "MINGPIAN_REDIS_URL": clean_redis_url,
            "MINGPIAN_WECOM_AIBOT__BOT_ID": BOT_ID, "MINGPIAN_WECOM_AIBOT__SECRET": SECRET,
            "MINGPIAN_WECOM_AIBOT__WS_URL": standin.url}
    store = RedisStore(clean_redis_url)
    a = Connector(tmp_path, "a", env)
    b: Connector | None = None
    try:
        wait_until(standin.is_connected, what="process a to subscribe")
        first = standin.current_number()
        b = Connector(tmp_path, "b", env)
        wait_until(lambda: "standing by" in b.stderr(), what="process b to stand by")
        assert standin.snapshot().connections == 1  # b did not connect beside a

        p1 = standin.push(aibot_text("ws-p1", "宝宝湿疹用什么好"))
        wait_until(lambda: store.queue_depth(INBOX) == 1, what="p1 queued by a")

        # a dies without a word; b takes the bot once a's lease runs out.
        assert a.finish(signal.SIGKILL) == -signal.SIGKILL
        wait_until(lambda: standin.current_number() > first, what="process b to take over")
        holder = store.get(LEASE_NS, BOT_ID)
        assert holder is not None and holder.doc["pid"] == b.proc.pid
        resent = standin.push(aibot_text("ws-p1", "宝宝湿疹用什么好"))  # a never confirmed
        p2 = standin.push(aibot_text("ws-p2", "宝宝湿疹反复，有没有温和的面霜推荐"))
        wait_until(lambda: "duplicate" in b.stderr() and store.queue_depth(INBOX) == 2,
                   what="p1 recognised, p2 queued")

        # The worker (here, in this process) applies both and answers the mention; its
        # reply goes onto the long connection's queue and out through b, echoing req_id.
        _apply_with_worker(tmp_path / "worker", clean_redis_url)
        wait_until(lambda: len(standin.snapshot().replies) >= 1 and
                   store.queue_depth(WS_REPLY_QUEUE) == 0, what="the reply sent")
    finally:
        a.finish(signal.SIGKILL)
        b_status = b.finish(signal.SIGTERM) if b is not None else None
        store_depth_replies = store.queue_depth(WS_REPLY_QUEUE)
        store.close()

    assert b is not None and b_status == 0, b.stderr() if b else ""  # SIGTERM: a clean stop

    seen = standin.snapshot()
    assert seen.max_active == 1  # never two connections for one bot
    assert seen.connections == 2
    # One answer to the group's mentions (the rate limit holds the other back), sent once,
    # echoing the req_id of the delivery that was queued (not the deduplicated resend's).
    assert len(seen.replies) == 1
    reply = seen.replies[0]
    assert reply["cmd"] == "aibot_respond_msg"
    assert reply["headers"]["req_id"] in {p1, p2}
    assert reply["headers"]["req_id"] != resent
    assert reply["body"]["msgtype"] == "stream" and reply["body"]["stream"]["finish"] is True
    assert reply["body"]["stream"]["content"]
    assert store_depth_replies == 0
    assert "callbacks queued" in b.out_path.read_text(encoding="utf-8")
