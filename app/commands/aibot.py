"""CLI verbs of the WeCom AI bot: `mingpian aibot connect` (the long connection)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from app.commands import Verbs, add_verb, verb_group
from app.settings import Settings

EXIT_KICKED = 3  # another connection took the bot (disconnected_event): not restarted here


def _connect(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import INBOX
    from bot.aibot import WS_REPLY_QUEUE
    from bot.aibot_ws import AibotWsClient, RunEnd, WsTiming
    from bot.inbox import Inbox
    from store import open_store
    from store.base import JSON

    cfg = settings.wecom_aibot
    if cfg is None or not cfg.bot_id or cfg.secret is None:
        print("mingpian aibot connect: set MINGPIAN_WECOM_AIBOT__BOT_ID and "
              "MINGPIAN_WECOM_AIBOT__SECRET (the bot's long-connection credentials)",
              file=sys.stderr)
        return 2
    timing = WsTiming(
        ping_interval_s=args.ping_interval, subscribe_timeout_s=args.subscribe_timeout,
        reply_ack_timeout_s=args.reply_timeout, backoff_base_s=args.backoff_base,
        backoff_cap_s=args.backoff_cap, lease_ttl_s=args.lease_ttl,
        reply_visibility_s=settings.queue_visibility_s,
        reply_max_attempts=settings.queue_max_attempts)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Only the store: this process queues what arrives and sends the worker's replies; the
    # worker (or an embedded serve) does the tagging.
    store = open_store(redis_url=settings.redis_url, data_dir=settings.data_dir)
    inbox = Inbox(store, queue=INBOX, dedup_ttl_s=settings.dedup_ttl_days * 86_400)

    async def accept(body: JSON, req_id: str) -> bool:
        return await inbox.accept_aibot(body, channel="ws", req_id=req_id)

    client = AibotWsClient(
        url=args.url or cfg.ws_url, bot_id=cfg.bot_id, secret=cfg.secret.get_secret_value(),
        accept=accept, store=store, reply_queue=WS_REPLY_QUEUE, timing=timing,
        on_kick=args.on_kick)

    async def run() -> RunEnd:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await client.run(stop)

    try:
        end = asyncio.run(run())
    finally:
        inbox.close()
        store.close()
    s = client.stats
    print(f"aibot connect {end}: {s.connects} connections, {s.received} callbacks queued, "
          f"{s.duplicates} duplicates, {s.replies_sent} replies sent, "
          f"{s.replies_dropped} dropped")
    return EXIT_KICKED if end is RunEnd.KICKED else 0


_CONNECT_HELP = (
    "Hold the WeCom AI bot's long connection (WebSocket to MINGPIAN_WECOM_AIBOT__WS_URL, "
    "bot id and secret from MINGPIAN_WECOM_AIBOT__BOT_ID / __SECRET): queue every message "
    "and event it brings (deduplicated on msgid) for the worker, and send the worker's "
    "replies back echoing each message's req_id. Pings every 30 s and reconnects with "
    "backoff. One connection per bot: a second process for the same bot (same store) waits "
    "as a standby and takes over when the first stops. Run it next to `mingpian worker` or "
    "`mingpian serve`. Exits 3 when WeCom reports that another connection took the bot.")


# The connection's timing options, in seconds: (flag, default, help).
_TIMING_OPTIONS: tuple[tuple[str, float, str], ...] = (
    ("--ping-interval", 30.0, "seconds between pings; two unanswered → reconnect (30)"),
    ("--subscribe-timeout", 10.0, "seconds to wait for the subscribe answer (10)"),
    ("--reply-timeout", 5.0, "seconds to wait for a reply's answer (5)"),
    ("--backoff-base", 1.0, "first reconnect pause, doubled each failure (1)"),
    ("--backoff-cap", 30.0, "longest reconnect pause (30)"),
)


def register(sub: Verbs) -> None:
    """Add this domain's verbs to the parser."""
    group = verb_group(sub, "aibot", help="the WeCom AI bot (智能机器人)")
    p = add_verb(group, "connect", _connect, description=_CONNECT_HELP,
                 help="hold the AI bot's long connection (no public address needed)")
    p.add_argument("--url", default=None,
                   help="WebSocket URL (default: MINGPIAN_WECOM_AIBOT__WS_URL)")
    for flag, default, text in _TIMING_OPTIONS:
        p.add_argument(flag, type=float, default=default, metavar="S", help=text)
    p.add_argument("--lease-ttl", type=int, default=60, metavar="S",
                   help="seconds a dead process keeps the bot from a standby (60)")
    p.add_argument("--on-kick", choices=("stop", "reconnect"), default="stop",
                   help="when another connection takes the bot: stop (exit 3) or reconnect")
