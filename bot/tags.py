"""Tags back into WeCom (issue 15 point 3): each contact's corporate tags follow their interests.

For every external contact who consented (bot/consent.py), the follow-up salesperson's
corporate tags on that contact, in one tag group of our own ("mingpian 兴趣" by default),
are made to equal the contact's top interests: tags are created on demand
(``add_corp_tag``, names cut to WeCom's 30 characters) and one ``mark_tag`` call adds and
removes what differs (WECOM.md §3). A contact who withdraws consent or is erased loses every
tag of the group; nothing is ever written for a contact without consent.

What is there is read from WeCom itself (``externalcontact/get``), not from a copy of ours:
running the job again changes nothing, and a tag someone removed by hand comes back only if
the interest is still there. Only tags of our group are touched (WeCom lets an app edit only
the tags it made, D92117).

Limits. WeCom allows 10,000 calls a minute per API per corp and blocks the corp for a minute
beyond (D90454): a `CallBudget` shared by every process through the store keeps each API
under a lower per-minute figure (a setting), and a 45009 answer waits for the next minute.
A contact's tags change at most once per `min_interval_s`, except that removing everything
(consent withdrawn, erasure) is never held back. The follow-up salesperson is the member
who added the contact first (the earliest ``createtime`` in ``follow_user``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from bot.contacts_api import ContactsApi, FollowUser, TagGroup
from bot.platform import PlatformError
from models.errors import AppError, UpstreamError
from store import Store

log = logging.getLogger("mingpian.tags")
T = TypeVar("T")

NS_STATE = "bot.tagsync"  # external_userid → {"at", "userid", "tags": [names we set]}
NS_BUDGET = "bot.tagsync.budget"
TAG_NAME_MAX = 30  # WeCom: group and tag names ≤ 30 characters (D92117)
RATE_LIMITED = 45009  # api freq out of limit (D90454)
INVALID_TAG = 40068  # a tag id WeCom no longer knows (deleted in the admin console)
GONE = frozenset({40096, 84061})  # not a contact (any more) / not this member's contact
BUDGET_CHUNK = 20  # calls a process reserves at once
RATE_RETRIES = 3


class NotConfiguredError(AppError):
    """WeCom (corp id and app secret) is not configured: nothing can be written back."""

    code = "not_configured"


class Consent(Protocol):
    """Who agreed to be profiled (bot/consent.py's ConsentBook)."""

    def has_consent(self, external_userid: str) -> bool:
        """Return whether the contact's latest answer is "agree"."""

    def consented(self) -> Iterable[str]:
        """Yield every contact whose latest answer is "agree"."""


@dataclass(frozen=True)
class TagSyncConfig:
    """Plain values from the settings (MINGPIAN_TAGS__*)."""

    group_name: str = "mingpian 兴趣"
    top_n: int = 3
    min_interval_s: int = 86_400
    calls_per_minute: int = 3000
    batch: int = 100
    window_s: float = 60.0  # WeCom counts calls per minute


@dataclass(frozen=True)
class ContactChange:
    """What changes (or would, in a dry run) on one contact: tag names added and removed."""

    external_userid: str
    userid: str
    add: tuple[str, ...]
    remove: tuple[str, ...]
    reason: str  # "interests", "no consent" or "erased"


@dataclass
class TagSyncReport:
    """What one run did (or would do)."""

    dry_run: bool
    contacts: int = 0  # looked at
    changed: int = 0  # contacts whose tags changed (or would)
    unchanged: int = 0  # already in step
    skipped_recent: int = 0  # changed less than min_interval_s ago
    skipped_untouched: int = 0  # nothing to write and never written: no call made
    created_tags: list[str] = field(default_factory=list)  # tag names made (or to be)
    changes: list[ContactChange] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (contact, why)

    def lines(self) -> list[str]:
        """Return the report as lines for a person (the CLI prints them)."""
        verb = "would change" if self.dry_run else "changed"
        out = [f"{self.contacts} contacts: {self.changed} {verb}, {self.unchanged} in step, "
               f"{self.skipped_recent} changed recently, {self.skipped_untouched} untouched, "
               f"{len(self.errors)} errors"]
        if self.created_tags:
            made = "would create" if self.dry_run else "created"
            out.append(f"  {made} tags: {'、'.join(self.created_tags)}")
        for c in self.changes:
            parts = [f"+{n}" for n in c.add] + [f"-{n}" for n in c.remove]
            out.append(f"  {c.external_userid} (@{c.userid}, {c.reason}): {' '.join(parts)}")
        out += [f"  error {who}: {why}" for who, why in self.errors]
        return out


class CallBudget:
    """Calls per API per minute, shared by every process through the store.

    A process reserves a few calls at a time under a store lock (one lock per
    `BUDGET_CHUNK` calls, not per call); when the minute's budget is spent it waits for the
    next minute."""

    def __init__(self, store: Store, *, per_window: int, window_s: float = 60.0,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.per_window = max(1, per_window)
        self.window_s = window_s
        self.clock = clock
        self.sleep = sleep
        self._local: dict[str, tuple[int, int]] = {}  # api → (window, calls left)
        self._mutex = threading.Lock()

    def _window(self) -> int:
        return int(self.clock() // self.window_s)

    def take(self, api: str) -> None:
        """Return once a call of api fits in the current minute's budget."""
        while True:
            window = self._window()
            with self._mutex:
                w, left = self._local.get(api, (window, 0))
                if w == window and left > 0:
                    self._local[api] = (w, left - 1)
                    return
            granted = self._reserve(api, window)
            if granted > 0:
                with self._mutex:
                    self._local[api] = (window, granted - 1)
                return
            self.wait_next_window()

    def wait_next_window(self) -> None:
        """Sleep until the next window starts."""
        self.sleep(max(0.0, (self._window() + 1) * self.window_s - self.clock()) + 0.001)

    def _reserve(self, api: str, window: int) -> int:
        with self.store.lock(f"tagsync-budget:{api}", ttl_s=10, wait_s=30) as got:
            if not got:
                raise UpstreamError("timed out waiting for the WeCom call budget")
            rec = self.store.get(NS_BUDGET, api)
            used = int(rec.doc["n"]) if rec is not None and rec.doc.get("w") == window else 0
            grant = min(BUDGET_CHUNK, self.per_window - used)
            if grant <= 0:
                return 0
            self.store.put(NS_BUDGET, api, {"w": window, "n": used + grant},
                           ttl_s=max(1, int(self.window_s * 2)))
            return grant


def tag_name(interest: str) -> str:
    """Return the WeCom tag name of an interest (cut to 30 characters)."""
    return interest.strip()[:TAG_NAME_MAX]


@dataclass
class _Plan:
    external_userid: str
    userid: str
    desired: set[str]
    current: dict[str, str]  # name → tag id, our group's tags on the contact now
    reason: str

    @property
    def add(self) -> list[str]:
        return sorted(self.desired - set(self.current))

    @property
    def remove(self) -> list[str]:
        return sorted(set(self.current) - self.desired)


class TagSync:
    """Keeps contacts' corporate tags in step with their interests (see the module doc)."""

    def __init__(self, store: Store, api: ContactsApi | None, *, config: TagSyncConfig,
                 interests: Callable[[str], Sequence[str]], erased: Callable[[str], bool],
                 consent: Consent, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.api = api
        self.config = config
        self.interests = interests
        self.erased = erased
        self.consent = consent
        self.clock = clock
        self.budget = CallBudget(store, per_window=config.calls_per_minute,
                                 window_s=config.window_s, clock=clock, sleep=sleep)
        self._group: TagGroup | None = None
        self._group_read = False  # read once per run, when a contact first needs it

    @property
    def enabled(self) -> bool:
        """Return whether WeCom is configured (else every sync raises NotConfiguredError)."""
        return self.api is not None

    # ------------------------------------------------------------------ WeCom calls

    def _call(self, name: str, fn: Callable[[], T]) -> T:
        """Run one API call inside the budget; wait out a 45009 (a few times) and retry."""
        for attempt in range(RATE_RETRIES + 1):
            self.budget.take(name)
            try:
                return fn()
            except PlatformError as e:
                if e.errcode != RATE_LIMITED or attempt == RATE_RETRIES:
                    raise
                log.warning("%s: WeCom says the call rate is over its limit; waiting", name)
                self.budget.wait_next_window()
        raise AssertionError("unreachable")  # pragma: no cover

    def _api(self) -> ContactsApi:
        if self.api is None:
            raise NotConfiguredError("WeCom is not configured (MINGPIAN_WECOM__CORP_ID and "
                                     "MINGPIAN_WECOM__SECRET): tags cannot be written back")
        return self.api

    def _load_group(self) -> TagGroup | None:
        api = self._api()
        groups = self._call("get_corp_tag_list", api.tag_groups)
        self._group = next((g for g in groups if g.name == self.config.group_name), None)
        self._group_read = True
        return self._group

    def _ids(self) -> dict[str, str]:
        """Return our group's tags, name → id (read from WeCom once per run)."""
        if not self._group_read:
            self._load_group()
        return {t.name: t.id for t in self._group.tags} if self._group else {}

    # ------------------------------------------------------------------ the run

    def contacts(self) -> list[str]:
        """Return every contact the job looks after: those who consented, and those we
        tagged before (whose tags may have to go)."""
        seen = dict.fromkeys(self.consent.consented())
        for key, _ in self.store.scan(NS_STATE):
            seen.setdefault(key)
        return list(seen)

    def sync_all(self, *, dry_run: bool = False) -> TagSyncReport:
        """Bring every contact the job looks after in step (see contacts())."""
        return self.sync_contacts(self.contacts(), dry_run=dry_run)

    def sync_contacts(self, external_userids: Sequence[str], *, dry_run: bool
                      ) -> TagSyncReport:
        """Bring these contacts' tags in step with their interests; with dry_run, only
        read, and report what would change. Raises NotConfiguredError without WeCom."""
        self._api()
        report = TagSyncReport(dry_run=dry_run)
        ids = list(dict.fromkeys(external_userids))
        self._group_read = False  # a run with nothing to write asks WeCom nothing
        size = max(1, self.config.batch)
        for start in range(0, len(ids), size):
            self._sync_batch(ids[start:start + size], report=report, dry_run=dry_run)
        return report

    def _desired(self, external_userid: str) -> tuple[set[str], str]:
        if self.erased(external_userid):
            return set(), "erased"
        if not self.consent.has_consent(external_userid):
            return set(), "no consent"
        names = [tag_name(t) for t in self.interests(external_userid)]
        return set(list(dict.fromkeys(n for n in names if n))[: self.config.top_n]), "interests"

    def _plan(self, external_userid: str, report: TagSyncReport) -> _Plan | None:
        """Decide one contact (reading WeCom when there may be something to do)."""
        report.contacts += 1
        desired, reason = self._desired(external_userid)
        state = self.store.get(NS_STATE, external_userid)
        if not desired and state is None:
            report.skipped_untouched += 1  # nothing to write, nothing of ours there
            return None
        recent = state is not None and \
            self.clock() - float(state.doc.get("at", 0)) < self.config.min_interval_s
        if recent and reason == "interests":
            report.skipped_recent += 1  # removing everything (privacy) is never held back
            return None
        api = self._api()
        try:
            follow = self._call("externalcontact/get",
                                lambda: api.follow_users(external_userid))
        except PlatformError as e:
            if e.errcode in GONE:  # no longer a contact: nothing to keep in step
                self.store.delete(NS_STATE, external_userid)
                report.unchanged += 1
                return None
            raise
        owner = _follow_up(follow)
        if owner is None:
            report.unchanged += 1
            return None
        names = {tid: name for name, tid in self._ids().items()}
        current = {names[t]: t for t in owner.tag_ids if t in names}
        return _Plan(external_userid, owner.userid, desired, current, reason)

    def _sync_batch(self, ids: Sequence[str], *, report: TagSyncReport, dry_run: bool) -> None:
        plans: list[_Plan] = []
        for ext in ids:
            try:
                plan = self._plan(ext, report)
            except UpstreamError as e:
                report.errors.append((ext, e.message))
                continue
            if plan is None:
                continue
            if not plan.add and not plan.remove:
                report.unchanged += 1
                self._finish(plan, dry_run=dry_run)
                continue
            plans.append(plan)
        if not plans:
            return
        missing = sorted({n for p in plans for n in p.add} - set(self._ids()))
        if missing:
            report.created_tags += missing
            if not dry_run:
                try:
                    self._create(missing)
                except UpstreamError as e:
                    report.errors += [(p.external_userid, e.message) for p in plans]
                    return
        for plan in plans:
            try:
                if not dry_run:
                    self._mark(plan)
            except UpstreamError as e:
                report.errors.append((plan.external_userid, e.message))
                continue
            report.changed += 1
            report.changes.append(ContactChange(plan.external_userid, plan.userid,
                                                tuple(plan.add), tuple(plan.remove),
                                                plan.reason))
            self._finish(plan, dry_run=dry_run)

    def _create(self, names: list[str]) -> None:
        api = self._api()
        group = self._group
        try:
            made = self._call("add_corp_tag", lambda: api.add_tags(
                names, group_id=group.id if group else None,
                group_name=None if group else self.config.group_name))
        except PlatformError as e:
            # Another process made some of them (40071) or the group went: read and retry.
            log.info("add_corp_tag: %s; reading the group again", e.errcode)
            self._load_group()
            still = [n for n in names if n not in self._ids()]
            if not still:
                return
            group = self._group
            made = self._call("add_corp_tag", lambda: api.add_tags(
                still, group_id=group.id if group else None,
                group_name=None if group else self.config.group_name))
        known = {t.id: t for t in (self._group.tags if self._group else ())}
        known.update({t.id: t for t in made.tags})
        self._group = TagGroup(id=made.id, name=made.name, tags=tuple(known.values()))

    def _mark(self, plan: _Plan) -> None:
        api = self._api()
        for attempt in range(2):
            ids = self._ids()
            add = [ids[n] for n in plan.add]
            remove = [plan.current[n] for n in plan.remove]
            try:
                self._call("mark_tag", functools.partial(
                    api.mark_tag, userid=plan.userid, external_userid=plan.external_userid,
                    add=add, remove=remove))
                return
            except PlatformError as e:
                if e.errcode != INVALID_TAG or attempt:
                    raise
                # A tag of ours was deleted in the admin console: read the group, make the
                # missing tags again, retry once.
                self._load_group()
                missing = [n for n in plan.add if n not in self._ids()]
                if missing:
                    self._create(missing)
                plan.current = {n: t for n, t in plan.current.items()
                                if t in set(self._ids().values())}

    def _finish(self, plan: _Plan, *, dry_run: bool) -> None:
        """Remember when a contact was put in step (or forget it once nothing of ours is
        left on it): the per-contact interval, and who to clean up later."""
        if dry_run:
            return
        if not plan.desired:
            self.store.delete(NS_STATE, plan.external_userid)
            return
        self.store.put(NS_STATE, plan.external_userid,
                       {"at": self.clock(), "userid": plan.userid, "tags": sorted(plan.desired)})


def _follow_up(follow: Sequence[FollowUser]) -> FollowUser | None:
    """Return the follow-up salesperson: who added the contact first."""
    return min(follow, key=lambda f: (f.createtime, f.userid)) if follow else None


def run_tag_sync(sync: TagSync, *, stop: threading.Event, interval_s: float,
                 claim: Callable[[], bool]) -> int:
    """Run the job every interval until stop is set (one process per interval: claim());
    return how many runs this process made."""
    runs = 0
    if interval_s <= 0 or not sync.enabled:
        return runs
    while not stop.wait(interval_s):
        try:
            if not claim():
                continue
            report = sync.sync_all()
            runs += 1
            log.info("tag sync: %s", report.lines()[0])
        except Exception:  # a failed run is retried next interval
            log.exception("tag sync failed; retrying in %.0f s", interval_s)
    return runs
