"""Concurrent order webhooks for one team on several `serve` processes never double-pay.

Three real `mingpian serve` processes share one redis-server; client threads post every
event twice (the mall retries) to random processes, and one process is killed with SIGKILL
half-way (its clients retry elsewhere, as the mall would). The ledger must equal a
single-process replay of the stored events, with every reward written exactly once.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cards.plan import BindEvent, OrderEvent, PlanConfig, replay
from cards.plan_store import LOG_EVENTS
from store.redis import RedisStore
from tests.cards.support import T0, Clock, credits, make_ledger
from tests.conftest import API_KEY
from tests.serve import ServeProcess

H = {"Authorization": f"Bearer {API_KEY}"}
MEMBERS = 36


def _serve(redis_url: str, workdir: Path) -> ServeProcess:
    return ServeProcess({
        "MINGPIAN_REDIS_URL": redis_url, "MINGPIAN_API_KEYS": API_KEY,
        "MINGPIAN_DATA_DIR": str(workdir / "data"), "MINGPIAN_LOG_LEVEL": "WARNING",
        "MINGPIAN_EMBEDDED_WORKER": "false", "MINGPIAN_SHARE_SECRET": "multi-secret",
        "MINGPIAN_EMBEDDER": "hash",  # orders need no sentence model: start fast
    }, workdir=workdir)


@pytest.fixture
def servers(clean_redis_url: str, tmp_path: Path) -> Iterator[list[ServeProcess]]:
    procs = [_serve(clean_redis_url, tmp_path / f"p{i}") for i in range(3)]
    try:
        for p in procs:
            p.wait_ready()
        yield procs
    finally:
        for p in procs:
            p.kill()


def _post(urls: list[str], client: httpx.Client, path: str, body: dict[str, Any],
          rng: random.Random) -> httpx.Response:
    """Post like the mall: on a dead server or a 5xx, retry on another one."""
    for _ in range(20):
        url = rng.choice(urls)
        try:
            r = client.post(url + path, json=body, headers=H, timeout=30)
        except httpx.TransportError:
            continue
        if r.status_code < 500:
            return r
    raise AssertionError(f"no server took {path} {body}")


def _events(codes: dict[str, str]) -> list[list[dict[str, Any]]]:
    """Per member, its order events in mall order (paid with ref_code, completed, refunds)."""
    per_member = []
    for n in range(MEMBERS):
        user = f"m{n}"
        ref = codes[("A1", "A2", "A3")[n % 3]]
        base = {"order_id": f"o-{user}", "user_id": user, "amount_cents": 10_000 + n,
                "items": [{"item_id": "sku-1", "amount_cents": 10_000 + n}]}
        evs = [base | {"status": "paid", "ref_code": ref, "ts": T0 + n},
               base | {"status": "completed", "ts": T0 + 100 + n}]
        if n % 4 == 0:
            evs.append(base | {"status": "refunded", "refund_cents": 3_000, "ts": T0 + 200 + n})
        if n % 8 == 0:
            evs.append(base | {"status": "refunded", "refund_cents": 6_000, "ts": T0 + 300 + n})
        per_member.append(evs)
    return per_member


def test_concurrent_webhooks_on_several_processes_never_double_pay(
    servers: list[ServeProcess], clean_redis_url: str,
) -> None:
    urls = [s.url for s in servers]
    with httpx.Client() as c:
        _run(servers, urls, c, clean_redis_url)


def _run(servers: list[ServeProcess], urls: list[str], c: httpx.Client, clean_redis_url: str) -> None:
    card = c.post(urls[0] + "/v1/cards", json={"staff_id": "staff-1", "name": "王小明"},
                  headers=H).json()["id"]
    codes = {u: c.post(f"{urls[0]}/v1/cards/{card}/shares", json={"sharer_id": u},
                       headers=H).json()["code"] for u in ("root", "B", "A1", "A2", "A3")}
    # The team: B made a boss by its "+1" (A3); A1 and A2 slid (B had no boss then).
    rng0 = random.Random(0)
    _post(urls, c, "/v1/referrals/bind", {"user_id": "B", "code": codes["root"]}, rng0)
    item = [{"item_id": "sku-1", "amount_cents": 10_000}]
    _post(urls, c, "/v1/orders", {"order_id": "o-B", "user_id": "B", "status": "completed",
                                  "amount_cents": 10_000, "items": item, "ts": T0}, rng0)
    for agent in ("A1", "A2", "A3"):
        _post(urls, c, "/v1/referrals/bind", {"user_id": agent, "code": codes["B"]}, rng0)
        _post(urls, c, "/v1/orders", {"order_id": f"o-{agent}", "user_id": agent,
                                      "status": "completed", "amount_cents": 10_000,
                                      "items": item, "ts": T0}, rng0)

    work = _events(codes)
    sent = 0
    lock = threading.Lock()
    killed = threading.Event()
    total = sum(len(evs) for evs in work) * 2

    def worker(idx: int) -> None:
        nonlocal sent
        rng = random.Random(idx)
        with httpx.Client() as client:
            for evs in work[idx::6]:
                for ev in evs:
                    for _ in range(2):  # every event arrives twice, at different processes
                        r = _post(urls, client, "/v1/orders", ev, rng)
                        assert r.status_code == 200, r.text
                        with lock:
                            sent += 1
                            if sent >= total // 2 and not killed.is_set():
                                killed.set()
                                servers[1].kill()  # SIGKILL mid-stream

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert killed.is_set()
    assert c.get(urls[0] + "/v1/rewards", params={"user_id": "B"}, headers=H).status_code == 200

    store = RedisStore(clean_redis_url)
    try:
        ledger, _ = make_ledger(store, Clock())
        assert ledger.pending() == 0
        rows = ledger.ledger_rows()
        assert ledger.verify().ok
        report = ledger.rebuild()
        assert report.identical and not report.entry_diffs
        # Every reward of every order is credited once, never twice.
        once = Counter((r["order_id"], r["beneficiary"], r["rule"]) for r in rows
                       if r["kind"] == "credit")
        assert once and max(once.values()) == 1
        assert {o for o, _, _ in once} >= {f"o-m{n}" for n in range(MEMBERS)}
        # ... and equals the engine's own single-process replay of the stored events.
        events: list[OrderEvent | BindEvent] = []
        for _, doc in store.read_log(LOG_EVENTS, limit=100_000):
            events.append(BindEvent.model_validate(doc)
                          if doc["type"] == "bind" else OrderEvent.model_validate(doc["order"]))
        assert len(events) == 8 + sum(len(evs) for evs in work)  # duplicates never stored
        drafts, _ = replay(events, config=PlanConfig())
        assert credits(rows) == credits([d.model_dump(mode="json") for d in drafts])
    finally:
        store.close()
