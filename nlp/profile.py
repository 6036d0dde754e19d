"""User and group interest profiles: exponentially decaying tag weights and interest vector.

A profile is stored as of a reference time ``ref``: every weight w means w · 2^(-(t-ref)/H)
at a later time t (H = half-life). Folding in a message at time ts first moves ``ref`` up to
ts (decaying what is there), then adds the message's contribution — decayed itself if the
message is older than ``ref`` (archives arrive out of order). The interest vector is kept as
a unit direction plus the magnitude of the decayed sum of message embeddings, so decay
never loses precision in the float16 storage.

Applying messages is exactly-once and race-free: a batch of messages is folded, in order,
into every user and group profile it touches, and all of them are written in one
:class:`~store.base.Batch` carrying a once-marker per message id and a version check per
record; a lost race re-reads and retries, and messages another worker applied meanwhile
(their marker is set) are left out.

Erasure leaves a tombstone (CONTRACTS §8): ``profile.erased`` holds, under a hash of the
user id (the erased id itself is not kept), the time of the latest erasure. A message of
that user whose ``ts`` is at or before it is dropped when applied, wherever it was queued;
later messages start a fresh profile. The tombstone is in the profiles' family and every
commit checks the version of the tombstones of the users it writes, so an erasure that
lands between a worker's read and its commit makes that commit conflict: it re-reads, sees
the tombstone and drops the message. No interleaving brings an erased profile back.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from models.messages import ChatMessage
from models.vectors import Precision, decode_stored, decode_vector, encode_vector
from nlp.tagging import TagResult
from store.base import JSON, Batch, CommitResult, Record, Store, family
from store.retry import AGAIN, Again, retry

NS_USER = "profile.user"
NS_GROUP = "profile.group"
NS_ERASED = "profile.erased"  # tombstones: tombstone_key(user_id) → {"at": Unix seconds}
# Identity links (nlp/identity.py, issue 15), in this family so that one commit links ids and
# merges their profiles, and a message's commit checks its sender's link.
# A ChatMessage whose msg_type starts with this is a behaviour signal (nlp/feedback.py).
SIGNAL_PREFIX = "signal:"
NS_ALIAS = "profile.alias"  # raw user id → {"person": canonical id, "kind": id kind}
NS_PERSON = "profile.person"  # canonical id → {"ids": [[kind, id], ...]}
Kind = Literal["user", "group"]
NAMESPACES: dict[str, str] = {"user": NS_USER, "group": NS_GROUP}
FAMILY = family(NS_USER)  # both namespaces' family: one commit may write them all

# A contentful message without tags still says something about the person, but less.
UNTAGGED_VECTOR_WEIGHT = 0.3
MAX_GROUPS = 50
VECTOR_PRECISION: Precision = "float16"  # stored interest directions: half the size of float32
_MIN_WEIGHT = 1e-4  # below this a decayed tag weight is dropped
_MAX_ATTEMPTS = 200
_CHUNK = 256  # messages per commit: bounds one transaction (and one Lua script's keys)


@dataclass(frozen=True)
class TagWeight:
    """A tag's decayed weight (sum of confidences, halving every half-life) and when a
    message last showed it (Unix seconds)."""

    tag: str
    weight: float
    last_seen: int


@dataclass(frozen=True)
class Profile:
    """A user's or a group's interests, decayed to the time it was read."""

    kind: Kind
    id: str
    tags: list[TagWeight]  # sorted by weight, highest first
    interest: npt.NDArray[np.float32] | None  # L2-normalised decayed mean of message vectors
    message_count: int
    last_seen: int  # time of the newest message (Unix seconds)
    updated_at: int  # when the profile was last written (Unix seconds)
    groups: list[str]  # user: the groups it posted in, most recent last
    # How many messages showed each tag (evidence, undecayed; issue 15's sidebar and console).
    tag_counts: dict[str, int] = field(default_factory=dict)


def applied_marker(msg_id: str) -> str:
    """The once-key a message's application to the profiles is committed under: a message
    whose marker is already set is never applied (a recall sets it first, bot/archive)."""
    return f"profile:{msg_id}"


def tombstone_key(user_id: str) -> str:
    """Return the key of a user's erasure tombstone (a hash: the erased id is not kept)."""
    return hashlib.sha256(f"erased\x1f{user_id}".encode()).hexdigest()[:40]


def _tombstones(store: Store, user_ids: Sequence[str]
                ) -> dict[str, tuple[str, Record | None]]:
    """Return, for each user, the key of their tombstone and the tombstone (None: never
    erased): one read for all of them, one hash per user."""
    keys = {u: tombstone_key(u) for u in user_ids}
    found = store.get_many(NS_ERASED, list(keys.values()))
    return {u: (k, found.get(k)) for u, k in keys.items()}


def erased_times(store: Store, user_ids: Sequence[str]) -> dict[str, float]:
    """Return, for the users among these that were erased, when they last were."""
    return {u: float(t.doc["at"]) for u, (_, t) in _tombstones(store, user_ids).items()
            if t is not None}


def erased_at(store: Store, user_id: str) -> float | None:
    """Return when the user was last erased (their tombstone), or None."""
    return erased_times(store, [user_id]).get(user_id)


def decay(dt_s: float, half_life_s: float) -> float:
    """Return the factor by which a weight shrinks over dt_s (never grows for dt_s < 0)."""
    return math.pow(2.0, -max(0.0, dt_s) / half_life_s)


def merge_docs(a: JSON, b: JSON, *, half_life_s: float) -> JSON:
    """Return the stored profile document of two people's profiles made one (identity
    links): both brought to the later reference time, then weights, interest vectors and
    evidence counts added; message counts added; groups a's then b's, most recent last."""
    ref = max(float(a["ref"]), float(b["ref"]))
    fa, fb = decay(ref - float(a["ref"]), half_life_s), decay(ref - float(b["ref"]), half_life_s)
    tags: dict[str, list[Any]] = {}
    for doc, f in ((a, fa), (b, fb)):
        for k, (w, seen) in doc["tags"].items():
            pw, ps = tags.get(k, [0.0, 0])
            tags[k] = [pw + float(w) * f, max(int(ps), int(seen))]
    total = np.zeros(0, dtype=np.float64)
    for doc, f in ((a, fa), (b, fb)):
        if doc.get("vec"):
            v = float(doc["vw"]) * f * decode_stored(
                doc["vec"], precision=VECTOR_PRECISION).astype(np.float64)
            total = v if total.size == 0 else total + v
    norm = float(np.linalg.norm(total)) if total.size else 0.0
    tc = dict(a.get("tc") or {})
    for k, c in (b.get("tc") or {}).items():
        tc[k] = int(tc.get(k, 0)) + int(c)
    groups = [*(g for g in a["groups"] if g not in b["groups"]), *b["groups"]][-MAX_GROUPS:]
    return {**b, **a, "ref": ref,
            "tags": {k: [round(w, 6), s] for k, (w, s) in tags.items() if w >= _MIN_WEIGHT},
            "vec": encode_vector(np.asarray(total / norm, dtype="<f2"),
                                 precision=VECTOR_PRECISION) if norm > 0 else None,
            "vw": norm, "n": int(a["n"]) + int(b["n"]),
            "last_seen": max(int(a["last_seen"]), int(b["last_seen"])),
            "updated_at": max(int(a["updated_at"]), int(b["updated_at"])),
            "groups": groups, "tc": tc}


class _Draft:
    """A profile document being folded into, message after message, in memory.

    Folding into a draft gives exactly the document that storing and re-reading after every
    message would: tag weights are rounded as they are stored, and the interest direction
    is kept as the float16 values its stored text holds; only the base64 and JSON steps
    between messages are skipped."""

    __slots__ = ("base", "groups", "last_seen", "n", "ref", "tags", "tc", "updated_at", "vec",
                 "vw")

    def __init__(self, doc: JSON | None, *, ts: int) -> None:
        self.base: JSON = doc or {}
        self.ref = float(doc["ref"]) if doc else float(ts)
        # Entries are replaced, never changed in place: the read document's lists can stay.
        self.tags: dict[str, list[Any]] = dict(doc["tags"]) if doc else {}
        self.vec: npt.NDArray[np.float16] | None = decode_stored(
            doc["vec"], precision=VECTOR_PRECISION) if doc and doc["vec"] else None
        self.vw = float(doc["vw"]) if doc else 0.0
        self.n = int(doc["n"]) if doc else 0
        self.last_seen = int(doc["last_seen"]) if doc else 0
        self.updated_at = int(doc["updated_at"]) if doc else 0
        self.groups: list[str] = list(doc["groups"]) if doc else []
        self.tc: dict[str, int] = dict(doc.get("tc") or {}) if doc else {}

    def fold(self, *, msg: ChatMessage, result: TagResult, half_life_s: float, now: float,
             group: str | None) -> None:
        """Fold one more message in (or a signal: what the person did, issue 15 point 7,
        which moves weights and the interest vector but is no message and no evidence)."""
        ts = msg.ts
        signal = msg.msg_type.startswith(SIGNAL_PREFIX)
        before = self.tags
        decayed = ts > self.ref
        f = 1.0
        if decayed:  # move the reference time up: decay what is there
            f = decay(ts - self.ref, half_life_s)
            self.tags = {k: [round(w * f, 6), seen] for k, (w, seen) in before.items()
                         if w * f >= _MIN_WEIGHT}
            self.vw *= f
            self.ref = float(ts)
        c = decay(self.ref - ts, half_life_s)  # < 1 for a message older than the profile
        # The message's own tags add to the unrounded decayed weight, rounded once after
        # (every other tag is rounded above, as storing after each message would).
        hits: dict[str, list[Any]] = {}
        for hit in result.tags:
            prev = hits.get(hit.tag)
            if prev is None:
                old = before.get(hit.tag)
                if old is None or (decayed and old[0] * f < _MIN_WEIGHT):
                    prev = [0.0, 0]
                else:
                    prev = [old[0] * f, old[1]] if decayed else old
            w, seen = prev
            # A taken-back signal (a refund: negative) does not make the tag recent.
            hits[hit.tag] = [w + hit.confidence * c, max(seen, ts) if hit.confidence > 0
                             else seen]
        for k, (w, seen) in hits.items():
            self.tags[k] = [round(w, 6), int(seen)]
            if not signal:
                self.tc[k] = self.tc.get(k, 0) + 1
        if result.vector is not None:
            weight = (1.0 if result.tags else UNTAGGED_VECTOR_WEIGHT) * c
            total = weight * np.asarray(result.vector, dtype=np.float64)
            if self.vec is not None:
                total += self.vw * self.vec.astype(np.float64)
            norm = float(np.linalg.norm(total))
            if norm > 0:
                self.vec = np.asarray(total / norm, dtype="<f2")
                self.vw = norm
        if group is not None:
            self.groups = [*(g for g in self.groups if g != group), group][-MAX_GROUPS:]
        if not signal:
            self.n += 1
            self.last_seen = max(self.last_seen, ts)
        self.updated_at = int(now)

    def doc(self) -> JSON:
        """Return the document to store."""
        vec = self.base.get("vec") if self.vec is None \
            else encode_vector(self.vec, precision=VECTOR_PRECISION)
        return {**self.base, "ref": self.ref, "tags": self.tags, "vec": vec,
                "vw": self.vw, "n": self.n, "last_seen": self.last_seen,
                "updated_at": self.updated_at, "groups": self.groups, "tc": self.tc}


def _drop_erased(items: Sequence[tuple[ChatMessage, TagResult]], pending: dict[str, int],
                 tombs: dict[str, tuple[str, Record | None]]) -> None:
    """Drop from pending the messages of erased users sent at or before their erasure."""
    erased = {u: float(t.doc["at"]) for u, (_, t) in tombs.items() if t is not None}
    dropped = {m for m, i in pending.items()
               if items[i][0].ts <= erased.get(items[i][0].user_id, -math.inf)}
    for m in dropped:
        del pending[m]


class ProfileRepo:
    """Reads and updates profiles in the store."""

    def __init__(self, store: Store, *, half_life_days: float,
                 clock: Callable[[], float] = time.time) -> None:
        if half_life_days <= 0:
            raise ValueError("half_life_days must be positive")
        self.store = store
        self.half_life_s = half_life_days * 86_400.0
        self.clock = clock
        self.conflicts = 0  # lost races, retried (for metrics and tests)

    def get(self, kind: Kind, id: str, *, now: float | None = None) -> Profile | None:
        """Return the profile decayed to now (the clock when None), or None if never seen."""
        rec = self.store.get(NAMESPACES[kind], id)
        if rec is None:
            return None
        d = rec.doc
        f = decay((self.clock() if now is None else now) - float(d["ref"]), self.half_life_s)
        tags = [TagWeight(tag=k, weight=w * f, last_seen=int(s))
                for k, (w, s) in d["tags"].items() if w * f >= _MIN_WEIGHT]
        tags.sort(key=lambda t: (-t.weight, t.tag))
        interest = decode_vector(d["vec"], precision=VECTOR_PRECISION) if d.get("vec") else None
        if interest is not None:
            n = float(np.linalg.norm(interest))
            interest = interest / n if n > 0 else None
        return Profile(kind=kind, id=id, tags=tags, interest=interest,
                       message_count=int(d["n"]), last_seen=int(d["last_seen"]),
                       updated_at=int(d["updated_at"]), groups=list(d["groups"]),
                       tag_counts={k: int(v) for k, v in (d.get("tc") or {}).items()})

    def apply(self, *, msg: ChatMessage, result: TagResult) -> bool:
        """Fold one message into its user's (and group's) profile, exactly once per msg_id;
        return True if it was applied now, False if it had been applied before."""
        return self.apply_many([(msg, result)])[0]

    def apply_many(self, items: Sequence[tuple[ChatMessage, TagResult]]) -> list[bool]:
        """Fold messages, in order, into their users' and groups' profiles, exactly once per
        msg_id; return for each whether it was applied now (False: applied before, or an
        earlier item of the same call has the same msg_id).

        The result is the one applying them one by one gives, in one read of the touched
        profiles and one commit per (at most) _CHUNK messages."""
        applied = [False] * len(items)
        first: dict[str, int] = {}  # once-marker → index of its first item
        for i, (msg, _) in enumerate(items):
            first.setdefault(applied_marker(msg.msg_id), i)
        markers = list(first)
        for c in range(0, len(markers), _CHUNK):
            chunk = {m: first[m] for m in markers[c : c + _CHUNK]}
            for i in self._apply_chunk(items, chunk):
                applied[i] = True
        return applied

    def _apply_chunk(self, items: Sequence[tuple[ChatMessage, TagResult]],
                     pending: dict[str, int]) -> list[int]:
        """Commit the items named by pending (marker → index) that no commit has applied;
        return the indexes applied now."""
        look = len(pending) > 1  # one message: its commit answers DUPLICATE just as well

        def attempt(_: int) -> list[int] | Again:
            nonlocal look
            if look:
                # Leave out what is applied already (a redelivery): cheap, outside any
                # transaction. The commit's markers are the real guard: another worker may
                # apply one of these in between (DUPLICATE: look again).
                for m in self.store.seen_once(FAMILY, list(pending)):
                    del pending[m]
                if not pending:
                    return []
            order = sorted(pending.values())
            users = list(dict.fromkeys(items[i][0].user_id for i in order))
            tombs = _tombstones(self.store, users)
            if any(t is not None for _, t in tombs.values()):
                _drop_erased(items, pending, tombs)
                if not pending:
                    return []
                order = sorted(pending.values())
                users = list(dict.fromkeys(items[i][0].user_id for i in order))
            batch = self._batch(items, order, users, pending, tombs)
            outcome = self.store.commit(batch)
            if outcome is CommitResult.OK:
                return order
            if outcome is CommitResult.DUPLICATE:
                if len(pending) == 1:
                    return []
                look = True  # another worker applied some of these meanwhile
                return AGAIN
            # Another worker wrote one of the records first: re-read and fold again.
            self.conflicts += 1
            look = False
            return AGAIN

        return retry(attempt, what=f"profile update for {len(pending)} messages",
                     attempts=_MAX_ATTEMPTS)

    def _batch(self, items: Sequence[tuple[ChatMessage, TagResult]], order: list[int],
               users: list[str], pending: dict[str, int],
               tombs: dict[str, tuple[str, Record | None]]) -> Batch:
        """Return the commit that folds the items at order into their user and group profiles."""
        groups = list(dict.fromkeys(g for i in order
                                    if (g := items[i][0].group_id) is not None))
        # A sender linked to a person (nlp/identity.py) is folded into the person's profile.
        links = self.store.get_many(NS_ALIAS, users)
        person = {u: str(links[u].doc["person"]) if u in links else u for u in users}
        read = {NS_USER: self.store.get_many(NS_USER, list(dict.fromkeys(person.values()))),
                NS_GROUP: self.store.get_many(NS_GROUP, groups) if groups else {}}
        drafts: dict[tuple[str, str], _Draft] = {}
        now = self.clock()
        for i in order:
            msg, result = items[i]
            targets = [(NS_USER, person[msg.user_id], msg.group_id)]
            if msg.group_id is not None:
                targets.append((NS_GROUP, msg.group_id, None))
            for ns, key, group in targets:
                draft = drafts.get((ns, key))
                if draft is None:
                    rec = read[ns].get(key)
                    draft = drafts[ns, key] = _Draft(rec.doc if rec else None, ts=msg.ts)
                draft.fold(msg=msg, result=result, half_life_s=self.half_life_s, now=now,
                           group=group)
        batch = Batch(once_all=list(pending))
        for (ns, key), draft in drafts.items():
            rec = read[ns].get(key)
            batch.puts.append((ns, key, draft.doc()))
            batch.checks.append((ns, key, rec.version if rec else 0))
        for u in users:  # a link committed since the read makes this a CONFLICT
            batch.checks.append((NS_ALIAS, u, links[u].version if u in links else 0))
        for u in users:  # an erasure committed since the read makes this a CONFLICT
            key, tomb = tombs[u]
            batch.checks.append((NS_ERASED, key, tomb.version if tomb else 0))
        return batch

    def erase_user(self, user_id: str) -> float:
        """Delete everything held about a user and leave a tombstone; return the erasure
        time (messages of the user sent at or before it are dropped when applied). Group
        profiles keep no user ids: they are anonymous aggregates and stay."""
        key = tombstone_key(user_id)

        def attempt(_: int) -> float | Again:
            tomb = self.store.get(NS_ERASED, key)
            at = max(self.clock(), float(tomb.doc["at"]) if tomb else -math.inf)
            # One commit: the profile goes and the tombstone's version moves, so a worker
            # that read before it conflicts and re-reads.
            batch = Batch(puts=[(NS_ERASED, key, {"at": at})], deletes=[(NS_USER, user_id)],
                          checks=[(NS_ERASED, key, tomb.version if tomb else 0)])
            return at if self.store.commit(batch) is CommitResult.OK else AGAIN

        return retry(attempt, what=f"erasure of {user_id!r}", attempts=_MAX_ATTEMPTS)

    def erased_since(self, user_ids: Sequence[str]) -> dict[str, float]:
        """Return, for the users among these that were erased, when they last were."""
        return erased_times(self.store, user_ids)
