"""What the console counts as messages go through (issue 18): daily counters, each group's
members and weekly topics, and a tag → member index for segments.

Nothing here keeps chat text. The counts are written by the pipeline's worker, one commit
per batch of applied messages (family ``console``), so the pages read a few counters instead
of scanning 100k profiles:

    console.daily           counters  "<day>|msgs|members|groups|asked|served|clicked"
    console.groups          counters  group → messages
    console.gm:<group>      counters  member key → messages in the group
    console.gt:<group>      counters  "<week>|<tag>" → summed confidence × 1000
    console.tw:<week>       counters  tag → tagged messages that week
    console.me:<member>     counters  tag → the member's messages with that tag (evidence)
    console.member          records   member key → {"user", "name", "last"}
    console.tagidx          records   "<tag>\x1f<user>" → {"t": last tagged message,
                                      "w": the tag's weight as of "ref" in the profile,
                                      "k": the entry's key in console.tr:<tag>}
    console.tr:<tag>        records   "<rank>\x1f<user>" → {"t", "w", "ref"}: the same
                                      entries ordered by weight, heaviest first (rank_key)

Weights decay, but all at one rate: w·2^(−(now−ref)/h) = 2^(s − now/h) with
s = log2(w) + ref/h, so ordering entries by s orders them by their weight at any time, and a
segment ("weight above X") is a prefix of console.tr:<tag> read in key order — bounded pages
instead of a scan of every member who ever had the tag. console.tagidx stays the truth: an
entry of console.tr whose key is not the one its tagidx record names (two workers raced on
one member's tag) is ignored when read.

A member key is a hash of the user id: the counters that outlive an erasure (they cannot be
deleted) name nobody once ``console.member`` and the tag index lose the user.

Distinct members and groups per day are counted under once-markers, so two workers never
count one member twice for a day. A crash between the profile commit and this one loses that
batch's counts (they are statistics, not acknowledgements).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.asgi import HttpMiddleware
from models.messages import ChatMessage
from nlp.pipeline import MessagePipeline, ProcessedMessage
from nlp.profile import NS_ALIAS
from nlp.profile import NS_USER as NS_USER_PROFILE
from store.base import Batch, CommitResult, Store

log = logging.getLogger("mingpian.console")

FAMILY = "console"
NS_DAILY = "console.daily"
NS_GROUPS = "console.groups"
NS_MEMBER = "console.member"
NS_TAGIDX = "console.tagidx"
SEP = "\x1f"
_RANK_BASE = 1e12  # rank = base − s: fixed-width, ascending keys = descending weights
_MARK_TTL_S = 3 * 86_400
_ATTEMPTS = 5
_OK = 200


def member_key(user_id: str) -> str:
    """Return the console's key of a member (a hash: counters that stay name nobody)."""
    return hashlib.sha256(f"console-member\x1f{user_id}".encode()).hexdigest()[:20]


def ns_group_members(group_id: str) -> str:
    """Return the counters namespace of a group's members."""
    return f"console.gm:{group_id}"


def ns_group_topics(group_id: str) -> str:
    """Return the counters namespace of a group's weekly topics."""
    return f"console.gt:{group_id}"


def ns_member_evidence(mk: str) -> str:
    """Return the counters namespace of a member's tag evidence (messages per tag)."""
    return f"console.me:{mk}"


def ns_tag_rank(tag: str) -> str:
    """Return the records namespace of a tag's members ordered by weight (see rank_key)."""
    return f"console.tr:{tag}"


def rank_score(w: float, ref: float, half_life_s: float) -> float:
    """Return s = log2(w) + ref/h: the decayed weight at any time t is 2^(s − t/h)."""
    return math.log2(w) + ref / half_life_s


def rank_key(w: float, ref: float, half_life_s: float, user_id: str) -> str | None:
    """Return the key of a member's entry in ns_tag_rank: keys in ascending order are the
    members by descending weight, at every time; None for a weight that is not positive."""
    if w <= 0:
        return None
    return f"{_RANK_BASE - rank_score(w, ref, half_life_s):018.4f}{SEP}{user_id}"


def rank_bound(key: str) -> float:
    """Return the s of a rank key (the inverse of rank_key's number)."""
    return _RANK_BASE - float(key.split(SEP, 1)[0])


def ns_tag_week(week: str) -> str:
    """Return the counters namespace of one week's tag counts."""
    return f"console.tw:{week}"


def local_day(ts: float, tz_offset_hours: int) -> str:
    """Return the local calendar day of a Unix time ("2026-05-01")."""
    return datetime.fromtimestamp(ts + tz_offset_hours * 3600, tz=UTC).strftime("%Y-%m-%d")


def local_week(ts: float, tz_offset_hours: int) -> str:
    """Return the local ISO week of a Unix time ("2026-W18")."""
    y, w, _ = datetime.fromtimestamp(ts + tz_offset_hours * 3600, tz=UTC).isocalendar()
    return f"{y}-W{w:02d}"


class ActivityRecorder:
    """Counts applied messages for the console (see the module docstring)."""

    def __init__(self, store: Store, *, tz_offset_hours: int, half_life_s: float) -> None:
        self.store = store
        self.tz = tz_offset_hours
        # The segment page reads weights from the tag index, not from 100k profiles: each
        # entry carries the tag's weight as the profile stored it (decayed when read), and
        # is kept a second time ordered by that weight (the profiles' half-life orders it).
        self.half_life_s = half_life_s

    def record(self, processed: Sequence[ProcessedMessage]) -> None:
        """Count the messages the profiles took now (best effort: a failure is logged)."""
        applied = [p for p in processed if p.applied]
        if not applied:
            return
        try:
            self._record(applied)
        except Exception:
            log.exception("console counters for %d messages were not written", len(applied))

    def _record(self, applied: Sequence[ProcessedMessage]) -> None:
        for _ in range(_ATTEMPTS):
            if self.store.commit(self._batch(applied)) is not CommitResult.DUPLICATE:
                return
        log.warning("console day markers kept colliding; counts of a batch were skipped")

    def _batch(self, applied: Sequence[ProcessedMessage]) -> Batch:
        incr: Counter[tuple[str, str]] = Counter()
        marks: dict[str, tuple[str, str]] = {}  # once-marker → (day, "members"|"groups")
        last: dict[str, tuple[int, str | None, str]] = {}  # member key → (ts, name, user)
        tagged: dict[str, int] = {}
        for p in applied:
            m = p.msg
            day = local_day(m.ts, self.tz)
            week = local_week(m.ts, self.tz)
            mk = member_key(m.user_id)
            incr[NS_DAILY, f"{day}|msgs"] += 1
            if m.mentions_bot:
                incr[NS_DAILY, f"{day}|asked"] += 1
            marks[f"console:{day}:u:{mk}"] = (day, "members")
            prev = last.get(mk)
            if prev is None or m.ts >= prev[0]:
                last[mk] = (m.ts, m.user_name or (prev[1] if prev else None), m.user_id)
            if m.group_id is not None:
                gk = hashlib.sha256(m.group_id.encode()).hexdigest()[:20]
                marks[f"console:{day}:g:{gk}"] = (day, "groups")
                incr[NS_GROUPS, m.group_id] += 1
                incr[ns_group_members(m.group_id), mk] += 1
            for hit in p.result.tags:
                incr[ns_tag_week(week), hit.tag] += 1
                incr[ns_member_evidence(mk), hit.tag] += 1
                if m.group_id is not None:
                    incr[ns_group_topics(m.group_id), f"{week}|{hit.tag}"] += round(
                        hit.confidence * 1000)
                key = f"{hit.tag}{SEP}{m.user_id}"
                tagged[key] = max(tagged.get(key, 0), m.ts)
        fresh = set(marks) - self.store.seen_once(FAMILY, list(marks))
        for marker in fresh:
            day, what = marks[marker]
            incr[NS_DAILY, f"{day}|{what}"] += 1
        known = self.store.get_many(NS_MEMBER, list(last))
        batch = Batch(once_all=sorted(fresh), once_ttl_s=_MARK_TTL_S)
        for mk, (ts, name, user) in last.items():
            rec = known.get(mk)
            old = rec.doc if rec else {}
            batch.puts.append((NS_MEMBER, mk, {
                "user": user, "name": name or old.get("name"),
                "last": max(ts, int(old.get("last", 0)))}))
        self._index(batch, tagged)
        batch.incrs += [(ns, key, n) for (ns, key), n in incr.items() if n]
        return batch

    def _index(self, batch: Batch, tagged: dict[str, int]) -> None:
        """Add the tag-index entries (and their weight-ordered copies) of tagged members,
        under the person a sender is linked to (nlp/identity.py), whose profile has it."""
        if not tagged:
            return
        raw = list({key.split(SEP, 1)[1] for key in tagged})
        links = self.store.get_many(NS_ALIAS, raw)
        person = {u: str(links[u].doc["person"]) if u in links else u for u in raw}
        latest: dict[str, int] = {}
        for key, ts in tagged.items():
            tag, user = key.split(SEP, 1)
            k = f"{tag}{SEP}{person[user]}"
            latest[k] = max(latest.get(k, 0), ts)
        profiles = self.store.get_many(NS_USER_PROFILE, list(set(person.values())))
        before = self.store.get_many(NS_TAGIDX, list(latest))
        for key, ts in latest.items():
            tag, user = key.split(SEP, 1)
            prof = profiles.get(user)
            w = prof.doc.get("tags", {}).get(tag) if prof else None
            old = before.get(key)
            doc = {"t": max(ts, int(old.doc.get("t", 0)) if old is not None else 0),
                   "w": float(w[0]) if w else 0.0,
                   "ref": float(prof.doc["ref"]) if prof else float(ts)}
            new = rank_key(doc["w"], doc["ref"], self.half_life_s, user)
            was = old.doc.get("k") if old is not None else None
            if was and was != new:
                batch.deletes.append((ns_tag_rank(tag), str(was)))
            if new is not None:
                batch.puts.append((ns_tag_rank(tag), new, doc))
            batch.puts.append((NS_TAGIDX, key, {**doc, "k": new}))

    def forget_member(self, user_id: str, tags: Iterable[str]) -> None:
        """Erase what the console holds about a user: its name, id and tag-index entries
        (both orders)."""
        keys = {f"{t}{SEP}{user_id}": t for t in tags}
        batch = Batch(deletes=[(NS_MEMBER, member_key(user_id))])
        batch.deletes += [(NS_TAGIDX, k) for k in keys]
        for key, rec in self.store.get_many(NS_TAGIDX, list(keys)).items():
            if rec.doc.get("k"):
                batch.deletes.append((ns_tag_rank(keys[key]), str(rec.doc["k"])))
        self.store.commit(batch)


class CountingPipeline(MessagePipeline):
    """The message pipeline, with the console's counters written after each batch and the
    operators' taxonomy changes picked up before it."""

    def __init__(self, inner: MessagePipeline, *, recorder: ActivityRecorder,
                 before_batch: Callable[[], object]) -> None:
        super().__init__(store=inner.store, tagger=inner.tagger, profiles=inner.profiles,
                         retain_messages=inner.retain_messages)
        self.recorder = recorder
        self.before_batch = before_batch

    def process_redacted(self, safe: Sequence[ChatMessage]) -> list[ProcessedMessage]:
        """Pick up taxonomy changes, run the pipeline, count what was applied."""
        try:
            self.before_batch()
        except Exception:  # a store hiccup must not stop tagging with the taxonomy in hand
            log.exception("taxonomy overrides could not be read")
        out = super().process_redacted(safe)
        self.recorder.record(out)
        return out


class RequestCounter:
    """Daily counts of recommendations served and card clicks, buffered in memory and
    added to the store every few seconds (not one write per request on the mall's path)."""

    def __init__(self, store: Store, *, tz_offset_hours: int, flush_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.tz = tz_offset_hours
        self.flush_s = flush_s
        self.clock = clock
        self._pending: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, what: str) -> None:
        """Count one event (served | clicked) today."""
        key = f"{local_day(self.clock(), self.tz)}|{what}"
        with self._lock:
            self._pending[key] += 1
            start = self._thread is None
            if start:
                self._thread = threading.Thread(target=self._run, name="console-counts",
                                                daemon=True)
        if start and self._thread is not None:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def flush(self) -> None:
        """Write what was counted since the last flush."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
        if not pending:
            return
        try:
            self.store.commit(Batch(incrs=[(NS_DAILY, k, n) for k, n in pending.items()]))
        except Exception:
            log.exception("console request counts were not written")

    def close(self) -> None:
        """Stop the flushing thread and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()


def counted(method: str, path: str, status: int) -> str | None:
    """Return what a request's answer counts as ("served", "clicked"), if anything."""
    if status == _OK and ((method == "GET" and path == "/v1/recommendations")
                          or (method == "POST" and path == "/v1/recommendations/query")):
        return "served"
    if method == "GET" and path.startswith("/r/") and status in (302, 303, 307):
        return "clicked"
    return None


class RequestCountMiddleware(HttpMiddleware):
    """Counts recommendations answered and tracked clicks (see RequestCounter)."""

    def __init__(self, app: ASGIApp,
                 counter_of: Callable[[Scope], RequestCounter | None]) -> None:
        super().__init__(app)
        self.counter_of = counter_of  # the services (and their counter) come with lifespan

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if not (path.startswith("/v1/recommendations") or path.startswith("/r/")):
            await self.app(scope, receive, send)
            return

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                what = counted(scope.get("method", ""), path, int(message["status"]))
                counter = self.counter_of(scope) if what is not None else None
                if counter is not None and what is not None:
                    counter.add(what)
            await send(message)

        await self.app(scope, receive, _send)
