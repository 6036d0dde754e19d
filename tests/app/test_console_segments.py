"""Segments read from the weight-ordered tag index (issue 18 point "≤ 200 ms p95 at 100k
members"): the same members, in the same order, as a brute-force pass over every profile —
page by page through the cursor, with a small read budget, on both back-ends; an entry left
behind by a race is ignored; an erased member leaves no entry behind."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.console import segments
from app.console.activity import NS_TAGIDX, SEP, ns_tag_rank, rank_key
from app.console.segments import SegmentQuery
from app.erasure import erase_user
from app.services import Services
from app.settings import Settings
from models.messages import ChatMessage
from nlp.profile import NS_USER, decay
from tests.app.test_console import ADMIN, sign_in
from tests.conftest import make_settings

TAG = "辅食添加"
DAY = 86_400
USERS = 24


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    redis_url = request.getfixturevalue("clean_redis_url") if backend == "redis" else None
    return make_settings(tmp_path / "data", redis_url=redis_url, embedder="hash",
                         embedded_worker=False, profile_half_life_days=7.0)


def feed(services: Services) -> float:
    """Members who talked about TAG a different number of times, on different days, and
    about other things later (so their profiles' reference times differ too)."""
    now = time.time()
    msgs = []
    for i in range(USERS):
        u = f"u-{i:03d}"
        day = now - (i * 3 % 50) * DAY - i * 60
        msgs += [ChatMessage(msg_id=f"{u}-{k}", platform="wecom", group_id="g-1", user_id=u,
                             text="宝宝辅食先加什么好？米粉还是蛋黄", ts=int(day) + k)
                 for k in range(1 + i % 4)]
        if i % 3 == 0:
            msgs.append(ChatMessage(msg_id=f"{u}-later", platform="wecom", group_id="g-1",
                                    user_id=u, text="娃晚上老醒，睡眠怎么调整",
                                    ts=int(now - (i % 5) * DAY)))
    msgs.sort(key=lambda m: m.ts)
    for start in range(0, len(msgs), 10):
        services.pipeline.process(msgs[start:start + 10])
    return now


def brute(services: Services, q: SegmentQuery) -> list[tuple[str, float]]:
    """Every profile read, decayed and filtered by hand."""
    now = time.time()
    since = now - q.days * DAY
    half = services.profiles.half_life_s
    out = []
    for user, rec in services.store.scan(NS_USER):
        hit = rec.doc.get("tags", {}).get(q.tag)
        if hit is None or hit[1] < since:
            continue
        w = float(hit[0]) * decay(now - float(rec.doc["ref"]), half)
        if w > q.min_weight:
            out.append((user, w))
    return sorted(out, key=lambda r: (-r[1], r[0]))


def walk(services: Services, q: SegmentQuery, **kw: Any) -> list[tuple[str, float]]:
    """Every page of the segment, through the `after` cursor."""
    got: list[tuple[str, float]] = []
    after = ""
    for _ in range(1000):
        page = segments.page(services, q, after=after, **kw)
        got += [(str(r["user"]), float(r["weight"])) for r in page.rows]
        if page.next is None:
            return got
        after = page.next
    raise AssertionError("the pages never ended")


@pytest.mark.parametrize(("days", "min_weight"), [(365, 0.0), (30, 0.0), (20, 0.5), (7, 0.0),
                                                  (365, 1.5)])
def test_segment_pages_match_a_scan_of_every_profile(services: Services, days: int,
                                                     min_weight: float) -> None:
    feed(services)
    q = SegmentQuery.of(TAG, days, min_weight)
    want = brute(services, q)
    assert 0 < len(want) < USERS or (days, min_weight) == (365, 0.0)
    first = segments.page(services, q)
    assert first.exact and first.total == len(want) and first.next is None
    assert [u for u, _ in want] == [str(r["user"]) for r in first.rows]
    # Small pages and a small read budget: the same members, once each, heaviest first.
    got = walk(services, q, limit=3, budget=4)
    assert [u for u, _ in got] == [u for u, _ in want]
    for (_, a), (_, b) in zip(got, want, strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    every = [w for _, chunk in enumerate(segments.members(services, q)) for w in chunk]
    assert [r["user"] for r in every] == [u for u, _ in want]


def test_a_page_reads_a_bounded_number_of_entries_and_says_so(services: Services) -> None:
    feed(services)
    q = SegmentQuery.of(TAG, 365, 0.0)  # everyone qualifies: each entry read is a member
    page = segments.page(services, q, limit=5, budget=8)
    assert not page.exact and page.total == 8 and len(page.rows) == 5
    assert page.next == page.rows[-1]["key"]  # the next page starts after the last row
    short = segments.page(services, q, limit=50, budget=3)
    assert not short.exact and len(short.rows) == 3
    assert short.next == short.rows[-1]["key"]  # the budget ran out: go on from there
    full = segments.page(services, q, limit=50)
    assert full.exact and full.total == USERS and full.next is None


def test_an_entry_left_by_a_race_is_ignored(services: Services) -> None:
    feed(services)
    q = SegmentQuery.of(TAG, 365, 0.0)
    want = [u for u, _ in brute(services, q)]
    # Two workers re-indexed u-001 at once: the loser's entry stays, heavier than anyone.
    rec = services.store.get(NS_TAGIDX, f"{TAG}{SEP}u-001")
    assert rec is not None
    stale = rank_key(1000.0, time.time(), services.profiles.half_life_s, "u-001")
    assert stale is not None
    services.store.put(ns_tag_rank(TAG), stale, {**rec.doc, "w": 1000.0, "ref": time.time()})
    assert [u for u, _ in walk(services, q)] == want


def test_erasure_leaves_no_entry(services: Services) -> None:
    feed(services)
    erase_user(services, "u-004")
    keys = [k for k, _ in services.store.scan(ns_tag_rank(TAG))]
    assert keys and not [k for k in keys if k.endswith(SEP + "u-004")]
    assert services.store.get(NS_TAGIDX, f"{TAG}{SEP}u-004") is None
    q = SegmentQuery.of(TAG, 365, 0.0)
    assert "u-004" not in [u for u, _ in walk(services, q)]


def test_segment_page_and_csv_through_the_console(client: TestClient,
                                                  services: Services) -> None:
    services.console.users.add(ADMIN[0], role="admin", password=ADMIN[1])
    feed(services)
    want = [u for u, _ in brute(services, SegmentQuery.of(TAG, 30, 0.0))]
    sign_in(client, ADMIN)
    page = client.get("/console/segments", params={"tag": TAG, "days": 30})
    assert page.status_code == 200 and f"共 {len(want)} 位成员" in page.text
    shown = [u for u in want if f'href="/console/members/{u}"' in page.text]
    assert shown == want
    r = client.get("/console/segments.csv", params={"tag": TAG, "days": 30})
    assert r.status_code == 200 and r.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0][0] == "user_id" and [row[0] for row in rows[1:]] == want
    bad = client.get("/console/segments", params={"tag": TAG, "after": "x" * 500})
    assert bad.status_code == 422
