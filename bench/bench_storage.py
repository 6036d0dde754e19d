"""Storage growth under a steady stream, without and with the scheduled purge (issue 12).

    .venv/bin/python -m bench.bench_storage [--days 42] [--per-day 100] [--keep 500]

Each simulated day: ``--per-day`` chat messages from 200 members in 20 groups through the
inbox and the worker (one @-mention of the bot per group: 20 replies a day, sent to a local
stand-in of the send API), and the mall edits 50 catalog items that the index follows. The
store's clock moves one day per day (no sleeping through TTLs); dedup keys live 7 days and
profile once-markers 30 days, as in production. Run twice on embedded SQLite: never purged
(what shipped before issue 12), and purged once a day by ``app.purge.purge_once``. Printed:
rows per table and live bytes (pages in use × page size) at the end of each week.
``--keep`` scales down the windows the purge keeps of the catalog change log and of the
reply log (10,000 entries each in production), so that a run of under a minute reaches them.

The hashing embedder stands in for the model: it does not change what is stored.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from app.purge import purge_once
from app.services import INBOX, build_services
from app.settings import Settings
from bot.routing import WECOM_APPCHAT
from catalog_sync.loader import demo_catalog_path
from models.catalog import CatalogItem
from models.messages import ChatMessage
from store.consumer import consume_once
from store.sqlite import SQLiteStore

DAY = 86_400
TABLES = ("seen", "queue", "logs", "records", "counters")


class Clock:
    """The store's clock, moved one simulated day at a time."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def measure(path: Path) -> dict[str, int]:
    """Return the rows of each table and the bytes of the pages in use."""
    db = sqlite3.connect(path)
    try:
        out = {t: int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in TABLES}
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
        free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
        size = int(db.execute("PRAGMA page_size").fetchone()[0])
        out["live_bytes"] = (pages - free) * size
        return out
    finally:
        db.close()


def run(*, purge: bool, days: int, per_day: int, keep: int,
        workdir: Path) -> list[dict[str, int]]:
    """Simulate the stream; return the measurements at the end of each week (and the last)."""
    clock = Clock(time.time())
    data = workdir / ("purged" if purge else "unpurged")
    store = SQLiteStore(data / "store.db", clock=clock)
    settings = Settings(_env_file=None, data_dir=data, embedder="hash",
                        embedded_worker=False, dedup_ttl_days=7,
                        reply={"quiet_start_hour": 0, "quiet_end_hour": 0})
    services = build_services(settings, store=store)
    sent: list[str] = []
    assert services.bot is not None and services.catalog is not None
    assert services.index is not None
    replier = services.bot.replier
    replier.senders = {**replier.senders, WECOM_APPCHAT: lambda chat, text: sent.append(chat)}
    services.bot.replier.clock = clock
    services.bot.replier.log_keep = keep
    services.catalog.changes_keep = keep
    inbox = services.bot.inbox
    items = [CatalogItem.model_validate(json.loads(x))
             for x in demo_catalog_path().read_text(encoding="utf-8").splitlines()]
    services.catalog.upsert(items)
    services.index.refresh()
    weeks: list[dict[str, int]] = []
    try:
        for day in range(days):
            for n in range(per_day):
                text = "@名片助手 宝宝辅食推荐哪个？" if n < 20 else "今天娃睡得不错"
                inbox.accept_message(ChatMessage(
                    msg_id=f"d{day}-{n}", platform="wecom", group_id=f"g-{n % 20}",
                    user_id=f"u-{n % 200}", text=text, ts=int(clock())))
            while consume_once(store, queue=INBOX, handler=services.inbox_handler,
                               consumer="bench", max_items=64, visibility_s=30) > 0:
                pass
            edited = [it.model_copy(update={"title": f"{it.title} · {day}"})
                      for it in items[(day * 50) % 100:(day * 50) % 100 + 50]]
            services.catalog.upsert(edited)
            services.index.refresh()
            clock.now += DAY
            if purge:
                purge_once(services)
            if (day + 1) % 7 == 0 or day == days - 1:
                weeks.append({"day": day + 1, **measure(store.path)})
    finally:
        services.close()
    return weeks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--days", type=int, default=42)
    p.add_argument("--per-day", type=int, default=100)
    p.add_argument("--keep", type=int, default=500)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for purge in (False, True):
            started = time.perf_counter()
            weeks = run(purge=purge, days=args.days, per_day=args.per_day, keep=args.keep,
                        workdir=Path(tmp))
            took = time.perf_counter() - started
            print(f"\n{'purged daily' if purge else 'never purged'} "
                  f"({args.days} days × {args.per_day} messages, {took:.1f} s)")
            print(f"{'day':>4} " + " ".join(f"{t:>8}" for t in (*TABLES, "live_bytes")))
            for w in weeks:
                print(f"{w['day']:>4} " + " ".join(f"{w[t]:>8}"
                                                    for t in (*TABLES, "live_bytes")))


if __name__ == "__main__":
    main()
