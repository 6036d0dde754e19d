"""Console pages under load (issue 18): p50/p95 of each page with 100k members and 10k items.

Fills a fresh SQLite store (or MINGPIAN_REDIS_URL's Redis with --redis) directly through the
store and the real write paths of the console's counters, then signs in and times each page
through the ASGI app in-process (no network), N requests per page. Prints one line per page.

    .venv/bin/python -m bench.bench_console [--members 100000] [--items 10000] [-n 50]

The lead runs it on a quiet machine; numbers go to BENCHMARKS.md. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from app.console.activity import (
    NS_GROUPS,
    NS_MEMBER,
    NS_TAGIDX,
    SEP,
    member_key,
    ns_group_members,
    ns_group_topics,
    ns_member_evidence,
    ns_tag_rank,
    rank_key,
)
from app.main import create_app
from app.services import build_services
from app.settings import Settings
from nlp.profile import NS_USER
from store.base import Batch

TAGS = ["辅食添加", "睡眠", "防晒", "敏感肌", "电瓶", "保养", "奶粉", "湿疹", "出牙", "贴膜"]
PASSWORD = "bench-password-1"


def fill(settings: Settings, *, members: int, items: int, groups: int) -> None:
    """Write members' profiles, the console's counters and index, and catalog items."""
    svc = build_services(settings)
    st = svc.store
    half = svc.profiles.half_life_s
    now = int(time.time())
    for start in range(0, members, 1000):
        batch = Batch()
        idx = Batch()
        for i in range(start, min(members, start + 1000)):
            u = f"u-{i:06d}"
            tags = {TAGS[(i + k) % len(TAGS)]: [round(0.5 + (i % 7) * 0.3 / (k + 1), 4),
                                                now - (i % 30) * 86_400] for k in range(3)}
            batch.puts.append((NS_USER, u, {"ref": now, "tags": tags, "vec": None, "vw": 0.0,
                                            "n": 3 + i % 40, "last_seen": now - i % 86_400,
                                            "updated_at": now, "groups": [f"g-{i % groups}"]}))
            mk = member_key(u)
            idx.puts.append((NS_MEMBER, mk, {"user": u, "name": f"成员{i}", "last": now}))
            for t in tags:
                doc = {"t": now - (i % 30) * 86_400, "w": tags[t][0], "ref": now}
                k = rank_key(tags[t][0], now, half, u)
                idx.puts.append((NS_TAGIDX, f"{t}{SEP}{u}", {**doc, "k": k}))
                if k is not None:
                    idx.puts.append((ns_tag_rank(t), k, doc))
                idx.incrs.append((ns_member_evidence(mk), t, 1 + i % 5))
            g = f"g-{i % groups}"
            idx.incrs += [(ns_group_members(g), mk, 3 + i % 40), (NS_GROUPS, g, 3 + i % 40)]
        st.commit(batch)
        st.commit(idx)
    for gi in range(groups):
        st.commit(Batch(incrs=[(ns_group_topics(f"g-{gi}"), f"2026-W{w:02d}|{t}", 1000 + w)
                               for w in range(1, 53) for t in TAGS]))
    rows = [{"id": f"sku-{i:05d}", "kind": "product", "title": f"商品 {i}",
             "price_cents": 1000 + i, "url": f"https://mall.example.com/p/{i}",
             "tags": [TAGS[i % len(TAGS)]],
             "availability": [{"provider_id": f"p-{i % 3}", "price_cents": 1000 + i,
                               "stock": i % 50}]} for i in range(items)]
    for start in range(0, items, 500):
        svc.catalog_service.upsert(rows[start:start + 500])
    svc.console.users.add("bench", role="admin", password=PASSWORD)
    svc.close()


def main() -> None:
    """Fill, then time each page."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--members", type=int, default=100_000)
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--groups", type=int, default=300)
    p.add_argument("-n", type=int, default=50, help="requests per page")
    p.add_argument("--redis", default=None, help="a Redis URL instead of SQLite")
    args = p.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bench-console-"))
    settings = Settings.model_validate({"_env_file": None, "data_dir": data,
                                        "redis_url": args.redis, "embedder": "hash",
                                        "embedded_worker": False, "api_keys": "x" * 16})
    t = time.perf_counter()
    fill(settings, members=args.members, items=args.items, groups=args.groups)
    print(f"filled {args.members} members, {args.items} items, {args.groups} groups in "
          f"{time.perf_counter() - t:.1f} s ({data})")
    pages = ["/console/", "/console/groups", "/console/groups/g-7",
             "/console/segments?tag=辅食添加&days=30&min_weight=0.9",
            "/console/segments?tag=睡眠&days=3",
             "/console/segments.csv?tag=防晒&days=7&min_weight=1.2",
             "/console/members/u-000042", "/console/members?q=u-0000",
             "/console/salespeople", "/console/ledger", "/console/catalog",
             "/console/catalog?after=sku-05000", "/console/taxonomy",
             "/console/dead-letters", "/console/audit"]
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as c:
        form = c.get("/console/login").text
        token = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = c.post("/console/login", data={"name": "bench", "password": PASSWORD,
                                           "csrf": token}, follow_redirects=False)
        assert r.status_code == 303, r.text
        print(f"{'page':58} {'p50 ms':>8} {'p95 ms':>8} {'bytes':>8}")
        for path in pages:
            times = []
            size = 0
            for _ in range(args.n):
                t0 = time.perf_counter()
                resp = c.get(path)
                times.append((time.perf_counter() - t0) * 1000)
                assert resp.status_code == 200, (path, resp.status_code)
                size = len(resp.content)
            times.sort()
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            print(f"{path:58} {statistics.median(times):8.1f} {p95:8.1f} {size:8d}")


if __name__ == "__main__":
    main()
