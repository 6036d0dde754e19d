"""Segments (issue 18): who talked about a tag in the last N days with a weight above X.

Read from the weight-ordered tag index (app/console/activity.py, ``console.tr:<tag>``) in
key order, heaviest first, a bounded chunk at a time: a page stops once it has its rows (or
has read its budget of entries), and every read stops where the weights fall to X. No
request reads every member who ever had the tag. Each entry is checked against the tag
index's record (``console.tagidx``), the truth: entries left behind by a race are skipped.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.console.activity import (
    NS_MEMBER,
    NS_TAGIDX,
    SEP,
    local_day,
    member_key,
    ns_tag_rank,
    rank_bound,
)
from app.services import Services
from nlp.profile import NS_ALIAS, NS_PERSON, decay
from nlp.profile import NS_USER as NS_USER_PROFILE

PAGE = 50
CHUNK = 500  # index entries read at once
SCAN_BUDGET = 5000  # index entries one page view reads at most (then: "at least N")
COUNT_CAP = 1000  # members a page view counts at most
_DAY_S = 86_400


@dataclass(frozen=True)
class SegmentQuery:
    """Which members: the tag, the last days, the weight they must exceed."""

    tag: str
    days: int
    min_weight: float

    @classmethod
    def of(cls, tag: str, days: int, min_weight: float) -> SegmentQuery:
        """Return the query with its values clamped to what the console allows."""
        return cls(tag=tag.strip()[:32], days=max(1, min(days, 365)),
                   min_weight=max(0.0, min_weight))


@dataclass
class SegmentPage:
    """One page of a segment, heaviest first."""

    query: SegmentQuery
    rows: list[dict[str, Any]] = field(default_factory=list)  # {"user", "weight", "key"}
    next: str | None = None  # where the next page starts (a key of the weight index)
    total: int = 0  # members counted (all of them when exact)
    exact: bool = True  # False: at least `total` (the count stopped at its budget)


class _Reader:
    """Reads one segment's members from the weight index, in order, in chunks."""

    def __init__(self, services: Services, q: SegmentQuery, *, now: float) -> None:
        self.store = services.store
        self.q = q
        self.half = services.profiles.half_life_s
        self.now = now
        self.since = now - q.days * _DAY_S
        # Keys whose s is at or below this hold weights ≤ min_weight (at `now`): stop there.
        self.floor = (math.log2(q.min_weight) + now / self.half if q.min_weight > 0
                      else -math.inf)
        self.scanned = 0
        self.cursor = ""
        self.done = not q.tag

    def chunk(self, limit: int = CHUNK) -> list[dict[str, Any]]:
        """Return the members among the next `limit` index entries (maybe none); sets done
        when the index, or the weights above min_weight, ran out."""
        if self.done:
            return []
        entries = self.store.scan_page(ns_tag_rank(self.q.tag), after=self.cursor, limit=limit)
        if len(entries) < limit:
            self.done = True
        wanted: list[tuple[str, str, float]] = []  # (rank key, user, weight now)
        for key, rec in entries:
            if rank_bound(key) <= self.floor:
                self.done = True
                break
            self.cursor = key
            self.scanned += 1
            d = rec.doc
            if float(d.get("t", 0)) < self.since:
                continue
            w = float(d.get("w", 0.0)) * decay(self.now - float(d.get("ref", self.now)),
                                               self.half)
            if w > self.q.min_weight:
                wanted.append((key, key.split(SEP, 1)[1], w))
        if not wanted:
            return []
        truth = self.store.get_many(NS_TAGIDX, [f"{self.q.tag}{SEP}{u}" for _, u, _ in wanted])
        out = []
        for key, user, w in wanted:
            entry = truth.get(f"{self.q.tag}{SEP}{user}")
            if entry is not None and entry.doc.get("k") == key:  # else left by a race
                out.append({"user": user, "weight": w, "key": key})
        return out


def page(services: Services, q: SegmentQuery, *, after: str = "", limit: int = PAGE,
         budget: int = SCAN_BUDGET, count_cap: int = COUNT_CAP) -> SegmentPage:
    """Return one page of the segment from `after` (a key of the weight index, "" for the
    first), and how many members it has (exactly, or at least so many)."""
    reader = _Reader(services, q, now=time.time())
    reader.cursor = after
    out = SegmentPage(query=q)
    seen: list[dict[str, Any]] = []
    while not reader.done and reader.scanned < budget and len(seen) < count_cap:
        got = reader.chunk(min(CHUNK, budget - reader.scanned))
        seen += got
        if len(seen) > limit and out.next is None:
            # The page ends at its last row; the next one starts right after it.
            out.next = str(seen[limit - 1]["key"])
    out.rows = seen[:limit]
    out.total = len(seen)
    out.exact = reader.done
    if out.next is None and not reader.done:
        out.next = reader.cursor  # ran out of budget before the page was full: go on from here
    return out


def members(services: Services, q: SegmentQuery) -> Iterator[list[dict[str, Any]]]:
    """Yield every member of the segment, heaviest first, a chunk at a time (the CSV, the
    WeCom tag write-back)."""
    reader = _Reader(services, q, now=time.time())
    while not reader.done:
        got = reader.chunk()
        if got:
            yield got


def detail(services: Services, rows: Sequence[dict[str, Any]], *,
           seen: set[str] | None = None) -> list[dict[str, Any]]:
    """Return segment rows with names, top tags and last activity (a few reads per 500).

    An id linked to a person since it was tagged (nlp/identity.py) stands for that person,
    whose profile holds its tags now; each person is listed once (``seen`` carries the
    persons listed already across calls)."""
    now = time.time()
    half = services.profiles.half_life_s
    seen = set() if seen is None else seen
    out: list[dict[str, Any]] = []
    for i in range(0, len(rows), CHUNK):
        part = rows[i:i + CHUNK]
        users = [str(r["user"]) for r in part]
        links = services.store.get_many(NS_ALIAS, users)
        person = {u: str(links[u].doc["person"]) if u in links else u for u in users}
        profiles = services.store.get_many(NS_USER_PROFILE, list(set(person.values())))
        names = {k: r.doc for k, r in services.store.get_many(
            NS_MEMBER, [member_key(u) for u in {*users, *person.values()}]).items()}
        for r in part:
            raw = str(r["user"])
            who = person[raw]
            rec = profiles.get(who)
            if rec is None or who in seen:  # erased since it was tagged, or listed already
                continue
            seen.add(who)
            name = (names.get(member_key(who)) or names.get(member_key(raw)) or {}).get("name")
            out.append({**r, "user": who, "name": name, "top": top_tags(rec.doc, now, half),
                        "last_seen": int(rec.doc.get("last_seen", 0))})
    return out


def wecom_contacts(services: Services, users: Sequence[str]) -> list[str]:
    """Return the WeCom contacts (external_userid) of these segment members: a person's
    linked ``wecom_external`` ids, or the id itself when it is linked to nothing (a sender
    in a customer group is one)."""
    persons = services.store.get_many(NS_PERSON, list(users))
    out: list[str] = []
    for u in users:
        rec = persons.get(u)
        if rec is None:
            out.append(u)
        else:
            out += [str(i) for k, i in rec.doc["ids"] if k == "wecom_external"]
    return list(dict.fromkeys(out))


def top_tags(doc: dict[str, Any], now: float, half_life_s: float, n: int = 3) -> list[str]:
    """Return a stored profile's n heaviest tags now, "tag weight"."""
    f = decay(now - float(doc["ref"]), half_life_s)
    ranked = sorted(((float(w) * f, t) for t, (w, _) in doc.get("tags", {}).items()),
                    reverse=True)
    return [f"{t} {w:.2f}" for w, t in ranked[:n]]


def csv_chunks(services: Services, q: SegmentQuery) -> Iterator[bytes]:
    """Yield the segment as CSV, UTF-8 with a BOM (Excel then reads the Chinese right), a
    chunk of members at a time."""
    tz = services.settings.tz_offset_hours
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["user_id", "昵称", f"{q.tag} 权重", "主要标签", "最近活跃"])
    yield ("\ufeff" + buf.getvalue()).encode("utf-8")
    seen: set[str] = set()
    for rows in members(services, q):
        buf = io.StringIO()
        w = csv.writer(buf)
        for r in detail(services, rows, seen=seen):
            w.writerow([r["user"], r["name"] or "", f"{r['weight']:.3f}", "；".join(r["top"]),
                        local_day(r["last_seen"], tz) if r["last_seen"] else ""])
        yield buf.getvalue().encode("utf-8")
