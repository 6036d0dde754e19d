"""Order webhooks and referral bindings into the plan: durable, exactly-once, crash-safe.

How an event becomes ledger entries
-----------------------------------
1. **Accept**: the event (pseudonymised, its ``ref_code`` resolved, the plan settings and
   binding policy in force recorded with it) is appended to the log ``plan.events`` in one
   commit with a once-marker per (order_id, status, refund_cents): the first wins, a repeat
   changes nothing. Once this commit lands the event is never lost.
2. **Apply**: under the store lock ``plan.apply`` an applier reads the events after the
   stored cursor, runs `PlanEngine` over a `StorePlanState` that buffers every write, and
   commits ONE batch: the changed users and orders, the hash-chained ledger entries (linked
   to the head recorded in the cursor), each event's outcome, and the advanced cursor —
   guarded by a version check on the cursor. If a lock expired and two appliers race, only
   one batch per cursor position lands; the other re-reads and finds nothing left to do.
   An entry is therefore written exactly once, whichever process applies it.
3. **Answer**: the webhook applies synchronously and answers from the event's outcome. A
   crash between 1 and 2 leaves a backlog that the next webhook, read or
   `mingpian ledger apply` catches up; a crash after 2 makes the mall retry, which is a
   duplicate.

Why the ledger cannot be edited quietly
---------------------------------------
Whoever can write the store could edit an entry and re-hash the rest of the chain, cut the
last entries and rewind the recorded head, or edit the per-beneficiary copies that balances
used to be read from. So (issue 12):

- the cursor's head (entry count and last hash) carries an HMAC tag under the ledger key,
  which the store never holds; the applier refuses to extend a head whose tag is wrong (it
  would otherwise sign a forgery), and `audit verify` reports it;
- balances come from the chain itself, verified on read: each `PlanLedger` keeps the entries
  it has verified (from genesis up to a validly signed head) and reads only the new ones
  after that, so an edit of an entry or a copy never changes a balance it reports;
- `audit verify` also compares every beneficiary's copies with the chain, and may compare
  the head with one anchored elsewhere (`--expect-head`, printed by `audit head`).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cards.ledger import (
    DEMO_LEDGER_KEY,
    GENESIS_HASH,
    VerifyResult,
    chain,
    head_tag,
    head_tag_ok,
    verify,
)
from cards.plan import (
    Balance,
    BindingRefusedError,
    BindPolicy,
    InvalidOrderError,
    LedgerDraft,
    MemoryPlanState,
    OrderEvent,
    PlanConfig,
    PlanEngine,
    ReferralView,
    RewardsView,
    balances,
    rewards_view,
)
from cards.plan_store import (
    APPLIED,
    CURSOR_KEY,
    LOG_EVENTS,
    LOG_LEDGER,
    NS_META,
    NS_ORDER,
    NS_OUTCOME,
    NS_USER,
    Outcome,
    StorePlanState,
    apply_event,
    beneficiary_log,
    plan_config_doc,
)
from cards.pseudonyms import NS_ANON, Pseudonyms
from models.errors import (
    AppError,
    ConflictError,
    NotFoundError,
)
from store import Batch, CommitResult, Store
from store.retry import AGAIN, Again, retry

log = logging.getLogger("mingpian.cards.orders")
_LOG_PAGE = 1000  # log entries read per request when walking a whole log

JSONDoc = dict[str, Any]

LOCK = "plan.apply"
LOCK_TTL_S = 5.0
LOCK_WAIT_S = 6.0  # past the TTL: a dead holder never blocks a webhook for long
ROUND_EVENTS = 200  # events per commit
DEDUP_TTL_S = 10 * 365 * 86_400  # the mall may replay an order event at any time
CORRECTION_REASON = "rebuild:correction"
# A mall clock a little ahead of ours is normal; an event dated further ahead is refused.
MAX_FUTURE_TS_S = 300


class LedgerIntegrityError(AppError):
    """The stored ledger fails verification: nothing is read from it or added to it."""

    code = "ledger_integrity"


def check_order(event: OrderEvent, *, now: float) -> None:
    """Raise InvalidOrderError unless the event's items fit its amount and its ts is not ahead.

    Items summing to more than `amount_cents` would pay rewards on money never paid (1,000.00
    of eligible items on a 10.00 order); a `ts` far in the future is a clock error or a forgery.
    """
    if event.eligible_cents > event.amount_cents:
        raise InvalidOrderError(
            f"the reward-eligible items sum to {event.eligible_cents} cents, more than "
            f"amount_cents {event.amount_cents}")
    if event.items_cents > event.amount_cents:
        raise InvalidOrderError(
            f"the items sum to {event.items_cents} cents, more than amount_cents "
            f"{event.amount_cents}")
    if event.ts > now + MAX_FUTURE_TS_S:
        raise InvalidOrderError(
            f"ts {event.ts} is more than {MAX_FUTURE_TS_S} s ahead of the service's clock")


@dataclass(frozen=True)
class Submitted:
    """The answer to an order webhook or a binding."""

    duplicate: bool
    outcome: Outcome | None  # None: accepted and queued, not applied yet
    event_id: str = ""


@dataclass(frozen=True)
class Cursor:
    """How far the applier got."""

    events: int = 0
    ledger: int = 0
    head: str = GENESIS_HASH
    version: int = 0  # 0: no cursor stored yet (a fresh store)
    tag: str = ""  # HMAC of (ledger, head) under the ledger key

    def to_dict(self) -> JSONDoc:
        """Return the stored form."""
        return {"events": self.events, "ledger": self.ledger, "head": self.head,
                "tag": self.tag}


@dataclass(frozen=True)
class SignedHead:
    """The ledger's head as `mingpian audit head` prints it, and whether its tag is valid."""

    count: int
    head: str
    tag: str
    valid: bool


class _VerifiedEntries:
    """The ledger entries one process has verified, per beneficiary: what balances read."""

    def __init__(self) -> None:
        self.count = 0
        self.head = GENESIS_HASH
        self.by_beneficiary: dict[str, list[JSONDoc]] = {}
        self.lock = threading.Lock()


@dataclass
class RebuildReport:
    """What `ledger rebuild` found: the replayed ledger next to the stored one."""

    events: int
    stored_entries: int
    rebuilt_entries: int
    entry_diffs: list[tuple[int, JSONDoc | None, JSONDoc | None]] = field(default_factory=list)
    balance_diffs: dict[str, tuple[dict[str, int], dict[str, int]]] = field(default_factory=dict)
    corrections: list[LedgerDraft] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """Return whether the replay gives the stored credits and balances.

        Entry-level differences alone (a ledger already corrected by `--write`, whose net
        credits per order, beneficiary and rule match the replay) are not a difference.
        """
        return not self.balance_diffs and not self.corrections


def _draft_doc(row: Mapping[str, Any]) -> JSONDoc:
    return LedgerDraft.model_validate(row).row()


class PlanLedger:
    """The plan over the store: accept events, apply them, answer views, rebuild, verify."""

    def __init__(
        self,
        store: Store,
        *,
        config: PlanConfig,
        policy: BindPolicy,
        window_days: int,
        resolve_code: Callable[[str], str | None],
        clock: Callable[[], float],
        ledger_key: bytes = DEMO_LEDGER_KEY,
    ) -> None:
        self.store = store
        self.config = config
        self.policy = policy
        self.window_days = window_days
        self.resolve_code = resolve_code
        self.clock = clock
        self.names = Pseudonyms(store)
        self.ledger_key = ledger_key
        self._verified = _VerifiedEntries()

    # ------------------------------------------------------------------ accept

    def _stamp(self, doc: JSONDoc) -> JSONDoc:
        doc["event_id"] = uuid.uuid4().hex
        doc["received_ts"] = int(self.clock())
        doc["policy"] = self.policy
        doc["window_days"] = self.window_days
        doc["plan"] = plan_config_doc(self.config)
        return doc

    def _buyer_name(self, event: OrderEvent) -> str | None:
        """Return the pseudonym an order event's buyer already has, if any.

        An event for an order whose buyer was erased (a refund after `DELETE /v1/users`)
        still belongs to that order: it takes the order's unlinked pseudonym, so the
        rewards it paid to others are reversed as usual.
        """
        name = self.names.get(event.user_id)
        if name is not None:
            return name
        rec = self.store.get(NS_ORDER, event.order_id)
        if rec is not None:
            owner = str(rec.doc["user_id"])
            if self.store.get(NS_ANON, owner) is None:
                return owner
        return None

    def submit_order(self, event: OrderEvent, *, ref_code: str | None, apply: bool = True
                     ) -> Submitted:
        """Accept an order webhook (user ids in event), then apply it; duplicates change nothing.

        An event that cannot be true (`check_order`) raises InvalidOrderError, storing nothing.
        """
        check_order(event, now=self.clock())
        sharer = self.resolve_code(ref_code) if ref_code else None
        once = f"plan-order:{event.order_id}:{event.status}:{event.refund_cents}"

        def attempt(_: int) -> Submitted | Again:
            buyer = self._buyer_name(event)
            res = self.names.resolve([u for u in (None if buyer else event.user_id, sharer) if u])
            if buyer is None:
                buyer = res.names[event.user_id]
            plan_event = event.model_copy(update={
                "user_id": buyer, "referrer_id": res.names[sharer] if sharer else None})
            doc = self._stamp({"type": "order", "order": plan_event.model_dump(mode="json"),
                               "ref_code": ref_code})
            batch = res.add_to(Batch(appends=[(LOG_EVENTS, doc)], once=once,
                                     once_ttl_s=DEDUP_TTL_S))
            result = self.store.commit(batch)
            if result is CommitResult.DUPLICATE:
                return Submitted(duplicate=True, outcome=None)
            if result is CommitResult.OK:
                return self._answer(doc["event_id"], apply=apply)
            return AGAIN

        return retry(attempt, what=f"the event of order {event.order_id!r}")

    def submit_bind(self, user_id: str, *, code: str, apply: bool = True) -> Submitted:
        """Accept a binding of user_id to the sharer of code, then apply it.

        Under policy "first" a binding whose answer the applied state already fixes (the
        user is bound, or it would close a cycle) is answered without being appended
        (`_settled_bind`); its `Submitted` then has no event_id.
        """
        sharer = self.resolve_code(code)
        if sharer is None:
            raise NotFoundError(f"unknown share code {code!r}")
        if sharer == user_id:
            raise BindingRefusedError("self_referral", "a user cannot refer itself")
        settled = self._settled_bind(user_id, sharer) if apply else None
        if settled is not None:
            return Submitted(duplicate=False, outcome=settled)

        def attempt(_: int) -> Submitted | Again:
            res = self.names.resolve([user_id, sharer])
            doc = self._stamp({"type": "bind", "user_id": res.names[user_id],
                               "referrer_id": res.names[sharer], "ts": int(self.clock()),
                               "code": code})
            if self.store.commit(res.add_to(Batch(appends=[(LOG_EVENTS, doc)]))) \
                    is CommitResult.OK:
                return self._answer(doc["event_id"], apply=apply)
            return AGAIN

        return retry(attempt, what="the binding")

    def _settled_bind(self, user_id: str, sharer: str) -> Outcome | None:
        """Return the answer a binding already has, or None when it must be appended.

        Under policy "first" a binding is final and links never change, so once the applied
        state shows the user bound, every later binding of it has a fixed answer whatever
        is appended meanwhile: the same referrer is a no-op success, another one is refused
        "already_bound". Likewise a referrer whose chain of referrers already holds the
        (unbound) user is refused "cycle". Such a binding changes nothing, so it is answered
        from the applied state, by the engine itself, without growing the event log (issue
        12 point 5: a mall calls bind on every login). Anything else is appended as usual:
        other policies, a user never seen, a binding that would change the graph, and any
        binding while a backlog waits (it may bind this user, or carry another policy).
        """
        if self.policy != "first" or self.pending() > 0:
            return None
        name = self.names.get(user_id)
        if name is None:
            return None  # never reached the plan (or erased): unbound
        # A sharer without a pseudonym gets a fresh one (not stored): it has no node.
        referrer = self.names.get(sharer) or self.names.resolve([sharer]).names[sharer]
        state = StorePlanState(self.store)
        engine = PlanEngine(self.config, state, bind_policy="first",
                            bind_window_days=self.window_days)
        try:
            engine.bind(name, referrer, ts=int(self.clock()))
        except BindingRefusedError as e:
            if e.reason == "already_bound":
                return Outcome.refused(e)
            if e.reason == "cycle" and not self._is_bound(name):
                # Read after the chain of referrers: the links found stay (policy "first"),
                # so a user still unbound now would close a cycle.
                return Outcome.refused(e)
            return None
        return APPLIED if not state.puts() else None  # a no-op writes nothing

    def _is_bound(self, name: str) -> bool:
        rec = self.store.get(NS_USER, name)
        return rec is not None and rec.doc.get("referrer") is not None

    def _answer(self, event_id: str, *, apply: bool) -> Submitted:
        if apply:
            self.catch_up()
        return Submitted(duplicate=False, outcome=self.outcome(event_id), event_id=event_id)

    def outcome(self, event_id: str) -> Outcome | None:
        """Return what became of an event, or None while it waits to be applied."""
        rec = self.store.get(NS_OUTCOME, event_id)
        return None if rec is None else Outcome.from_dict(rec.doc)

    # ------------------------------------------------------------------ apply

    def cursor(self) -> Cursor:
        """Return the applier's cursor."""
        rec = self.store.get(NS_META, CURSOR_KEY)
        if rec is None:
            return Cursor()
        d = rec.doc
        return Cursor(int(d["events"]), int(d["ledger"]), str(d["head"]), rec.version,
                      str(d.get("tag", "")))

    def _signed(self, *, events: int, ledger: int, head: str) -> Cursor:
        return Cursor(events, ledger, head,
                      tag=head_tag(key=self.ledger_key, count=ledger, head=head))

    def head_ok(self, cur: Cursor) -> bool:
        """Return whether the cursor's head carries a valid tag (a fresh store has none)."""
        if cur.version == 0:
            return cur.ledger == 0 and cur.head == GENESIS_HASH
        return head_tag_ok(cur.tag, key=self.ledger_key, count=cur.ledger, head=cur.head)

    def _require_head(self, cur: Cursor) -> None:
        if not self.head_ok(cur):
            raise LedgerIntegrityError(
                f"the ledger's recorded head (entry {cur.ledger}) has no valid HMAC tag: it was "
                "rewound or rewritten, or MINGPIAN_LEDGER_KEY is not the key that signed it; "
                "run `mingpian audit verify`")

    def head(self) -> SignedHead:
        """Return the ledger's head (entry count, last hash, HMAC tag) for anchoring elsewhere."""
        cur = self.cursor()
        return SignedHead(cur.ledger, cur.head, cur.tag, self.head_ok(cur))

    def pending(self) -> int:
        """Return how many accepted events wait to be applied."""
        return self.store.log_length(LOG_EVENTS) - self.cursor().events

    def catch_up(self) -> int:
        """Apply every accepted event not applied yet; return how many this call applied."""
        applied = 0
        # The lock only saves work; correctness comes from the cursor check, so an applier
        # that cannot get the lock (its holder died) goes ahead after LOCK_WAIT_S.
        with self.store.lock(LOCK, ttl_s=LOCK_TTL_S, wait_s=LOCK_WAIT_S):
            while True:
                n = self._apply_round()
                if n == 0:
                    return applied
                applied += n

    def _apply_round(self) -> int:
        def attempt(n: int) -> int | Again:
            if n:
                log.info("another applier advanced the plan cursor; re-reading")
            cur = self.cursor()
            events = self.store.read_log(LOG_EVENTS, after=cur.events, limit=ROUND_EVENTS)
            if not events:
                return 0
            # Extending a forged head would sign it: refuse, whatever the events are.
            self._require_head(cur)
            state = StorePlanState(self.store)
            rows: list[JSONDoc] = []
            outcomes: list[tuple[str, str, JSONDoc]] = []
            head, ledger_len = cur.head, cur.ledger
            for seq, doc in events:
                outcome, drafts = apply_event(state, doc)
                chained = chain([d.row() for d in drafts], prev_hash=head,
                                start_seq=ledger_len + 1)
                if chained:
                    head, ledger_len = chained[-1]["hash"], chained[-1]["seq"]
                rows += chained
                out = outcome.to_dict() | {"seq": seq, "entries": [r["seq"] for r in chained]}
                outcomes.append((NS_OUTCOME, str(doc.get("event_id", f"seq-{seq}")), out))
            new = self._signed(events=events[-1][0], ledger=ledger_len, head=head)
            batch = Batch(
                puts=[*state.puts(), *outcomes, (NS_META, CURSOR_KEY, new.to_dict())],
                appends=[(LOG_LEDGER, r) for r in rows]
                + [(beneficiary_log(r["beneficiary"]), r) for r in rows],
                checks=[(NS_META, CURSOR_KEY, cur.version)],
            )
            return len(events) if self.store.commit(batch) is CommitResult.OK else AGAIN

        return retry(attempt, what="the plan cursor")

    # ------------------------------------------------------------------ views

    def _iter_log(self, name: str) -> Iterator[tuple[int, JSONDoc]]:
        after = 0
        while True:
            page = self.store.read_log(name, after=after, limit=_LOG_PAGE)
            yield from page
            if len(page) < _LOG_PAGE:
                return
            after = page[-1][0]

    def _to_user_ids(self, names: Sequence[str]) -> dict[str, str]:
        linked = self.names.user_ids(names)
        return {n: linked.get(n, n) for n in names}

    def _verified_rows(self, name: str) -> list[JSONDoc]:
        """Return the beneficiary's entries from the chain, verified up to the signed head."""
        idx = self._verified
        with idx.lock:
            cur = self.cursor()
            self._require_head(cur)
            if cur.ledger < idx.count or (cur.ledger == idx.count and cur.head != idx.head):
                raise LedgerIntegrityError(
                    f"the ledger's head went back from entry {idx.count} to {cur.ledger}: "
                    "entries were cut; run `mingpian audit verify`")
            rows: list[JSONDoc] = []
            while len(rows) < cur.ledger - idx.count:
                page = self.store.read_log(LOG_LEDGER, after=idx.count + len(rows),
                                           limit=min(1000, cur.ledger - idx.count - len(rows)))
                if not page:
                    break
                rows += [row for _, row in page]
            # Only the entries after those verified before are read: the chain from the last
            # verified hash to the signed head is checked, so nothing edited is ever counted.
            result = verify(rows, prev_hash=idx.head, start_seq=idx.count + 1,
                            head_hash=cur.head)
            if not result.ok:
                raise LedgerIntegrityError(f"the ledger fails verification at entry "
                                           f"{result.first_bad_seq}: {result.reason}")
            for row in rows:
                idx.by_beneficiary.setdefault(str(row["beneficiary"]), []).append(row)
            idx.count, idx.head = cur.ledger, cur.head
            return list(idx.by_beneficiary.get(name, ()))

    def rewards(self, user_id: str) -> RewardsView:
        """Return the body of `GET /v1/rewards?user_id=U`, read from the verified chain."""
        name = self.names.get(user_id)
        if name is None:
            return RewardsView(entries=[], balances=Balance())
        rows = self._verified_rows(name)
        view = rewards_view(rows, user_id=name, now_ts=int(self.clock()), config=self.config)
        ids = self._to_user_ids([u for e in view.entries for u in e.path])
        for entry in view.entries:
            entry.path = [ids[u] for u in entry.path]
        return view

    def referrals(self, user_id: str) -> ReferralView:
        """Return the body of `GET /v1/referrals/{user_id}` (a user never seen is a member)."""
        name = self.names.get(user_id)
        if name is None:
            return ReferralView(role="member", referrer=None, boss=None, origin_boss=None,
                                direct_referrals=[], team=[])
        view = PlanEngine(self.config, StorePlanState(self.store)).referral_view(name)
        names = [v for v in (view.referrer, view.boss, view.origin_boss) if v]
        ids = self._to_user_ids(names + view.direct_referrals + view.team)
        ids[name] = user_id

        def user_id_of(n: str | None) -> str | None:
            return None if n is None else ids.get(n, n)

        return ReferralView(
            role=view.role, referrer=user_id_of(view.referrer), boss=user_id_of(view.boss),
            origin_boss=user_id_of(view.origin_boss),
            direct_referrals=[ids[u] for u in view.direct_referrals],
            team=[ids[u] for u in view.team])

    def ledger_rows(self) -> list[JSONDoc]:
        """Return every stored ledger entry, in stored order."""
        return [row for _, row in self._iter_log(LOG_LEDGER)]

    # ------------------------------------------------------------------ audit

    def verify(self, *, expect_head: str | None = None) -> VerifyResult:
        """Check the stored ledger; name the first altered entry.

        In order: the hash chain up to the recorded head (an edited, deleted or reordered
        entry), entries past the head, the head's HMAC tag (a cut tail: entries removed and
        the head rewound), every beneficiary's copies against the chain, and with
        expect_head, that a head anchored elsewhere is still in the chain.
        """
        with self.store.lock(LOCK, ttl_s=LOCK_TTL_S, wait_s=LOCK_WAIT_S):
            rows = self.ledger_rows()
            cur = self.cursor()
            by_name: dict[str, list[JSONDoc]] = {}
            for row in rows[: cur.ledger]:
                by_name.setdefault(str(row.get("beneficiary")), []).append(row)
            copies = {name: [r for _, r in self._iter_log(beneficiary_log(name))]
                      for name in by_name}
        result = _check_chain(rows, cur)
        if not result.ok:
            return result
        if not self.head_ok(cur):
            return VerifyResult(
                ok=False, first_bad_seq=cur.ledger + 1,
                reason=f"the recorded head (entry {cur.ledger}) has no valid HMAC tag: "
                       "entries from here on were cut and the head rewound (or the "
                       "head was rewritten, or MINGPIAN_LEDGER_KEY is not the key "
                       "that signed it)")
        bad = _first_bad_copy(by_name, copies)
        if bad is not None:
            seq, name = bad
            who = self.names.user_ids([name]).get(name, name)
            return VerifyResult(
                ok=False, first_bad_seq=seq,
                reason=f"the copy of entry {seq} in the rewards view of {who} differs "
                       "from the chain (edited, deleted, added or moved)")
        if expect_head is not None and expect_head != GENESIS_HASH \
                and expect_head not in {r.get("hash") for r in rows}:
            return VerifyResult(
                ok=False, first_bad_seq=None,
                reason=f"the anchored head {expect_head} is not in the chain: the "
                       "ledger was rewritten or cut back past it")
        return VerifyResult(ok=True)

    def sign_head(self) -> VerifyResult:
        """Sign the recorded head with the ledger key once the chain up to it checks out.

        For a ledger written before the head was keyed, or after the key was rotated: the
        operator vouches that the head is genuine (compare it with an anchored one first).
        """
        with self.store.lock(LOCK, ttl_s=60, wait_s=LOCK_WAIT_S):
            rows = self.ledger_rows()
            cur = self.cursor()
            result = _check_chain(rows, cur)
            if not result.ok:
                return result
            new = self._signed(events=cur.events, ledger=cur.ledger, head=cur.head)
            batch = Batch(puts=[(NS_META, CURSOR_KEY, new.to_dict())],
                          checks=[(NS_META, CURSOR_KEY, cur.version)])
            if self.store.commit(batch) is not CommitResult.OK:
                raise ConflictError("the ledger moved while signing its head; run it again")
        return VerifyResult(ok=True)

    def rebuild(self, *, write: bool = False) -> RebuildReport:
        """Replay the stored events into a fresh state and compare with the stored ledger.

        With write, a ledger that differs gets correction entries (new entries, never edits)
        that bring every balance to the replayed one, and the graph and orders are replaced
        by the replayed ones — the re-settlement after an engine fix.
        """
        with self.store.lock(LOCK, ttl_s=60, wait_s=LOCK_WAIT_S):
            self.catch_up_unlocked()
            cur = self.cursor()
            events = [doc for _, doc in self._iter_log(LOG_EVENTS)][: cur.events]
            stored = [_draft_doc(r) for r in self.ledger_rows()[: cur.ledger]]
            state = MemoryPlanState()
            rebuilt: list[JSONDoc] = []
            for doc in events:
                rebuilt += [d.row() for d in apply_event(state, doc)[1]]
            report = RebuildReport(len(events), len(stored), len(rebuilt))
            for i in range(max(len(stored), len(rebuilt))):
                a = stored[i] if i < len(stored) else None
                b = rebuilt[i] if i < len(rebuilt) else None
                if a != b:
                    report.entry_diffs.append((i + 1, a, b))
            now = int(self.clock())
            before = balances(stored, now_ts=now, config=self.config)
            after = balances(rebuilt, now_ts=now, config=self.config)
            for name in sorted(set(before) | set(after)):
                x = before.get(name, Balance()).model_dump()
                y = after.get(name, Balance()).model_dump()
                if x != y:
                    report.balance_diffs[name] = (x, y)
            report.corrections = _corrections(stored, rebuilt, ts=now)
            if write and not report.identical:
                self._write_rebuild(cur, state, report.corrections)
        return report

    def catch_up_unlocked(self) -> None:
        """Apply the backlog from a caller that already holds the apply lock."""
        while self._apply_round():
            pass

    def _write_rebuild(self, cur: Cursor, state: MemoryPlanState,
                       corrections: list[LedgerDraft]) -> None:
        self._require_head(cur)
        rows = chain([c.row() for c in corrections], prev_hash=cur.head,
                     start_seq=cur.ledger + 1)
        new = self._signed(events=cur.events, ledger=cur.ledger + len(rows),
                           head=rows[-1]["hash"] if rows else cur.head)
        puts: list[tuple[str, str, JSONDoc]] = [(NS_USER, k, v) for k, v in state.users.items()]
        puts += [(NS_ORDER, k, v) for k, v in state.orders.items()]
        deletes = [(NS_USER, k) for k, _ in self.store.scan(NS_USER) if k not in state.users]
        deletes += [(NS_ORDER, k) for k, _ in self.store.scan(NS_ORDER) if k not in state.orders]
        batch = Batch(
            puts=[*puts, (NS_META, CURSOR_KEY, new.to_dict())], deletes=deletes,
            appends=[(LOG_LEDGER, r) for r in rows]
            + [(beneficiary_log(r["beneficiary"]), r) for r in rows],
            checks=[(NS_META, CURSOR_KEY, cur.version)],
        )
        if self.store.commit(batch) is not CommitResult.OK:
            raise ConflictError("the ledger moved during the rebuild; run it again")

    # ------------------------------------------------------------------ erasure

    def erase_user(self, user_id: str) -> bool:
        """Unlink the user from the plan (ledger rows stay under an unlinkable pseudonym)."""
        return self.names.erase(user_id)


def _check_chain(rows: Sequence[JSONDoc], cur: Cursor) -> VerifyResult:
    """Return whether the chain checks out up to the recorded head and holds nothing past
    it (an entry past the head was never written by the applier)."""
    result = verify(rows[: cur.ledger], head_hash=cur.head)
    if result.ok and len(rows) > cur.ledger:
        return VerifyResult(
            ok=False, first_bad_seq=cur.ledger + 1,
            reason=f"entry {cur.ledger + 1} was never written by the applier "
                   f"(the chain's recorded head is entry {cur.ledger})")
    return result


def _first_bad_copy(chained: Mapping[str, Sequence[JSONDoc]],
                    copies: Mapping[str, Sequence[JSONDoc]]) -> tuple[int, str] | None:
    """Return (seq, beneficiary) of the first entry whose copy differs from the chain."""
    worst: tuple[int, str] | None = None
    for name, rows in chained.items():
        mine = copies.get(name, ())
        for i in range(max(len(rows), len(mine))):
            row = rows[i] if i < len(rows) else None
            copy = mine[i] if i < len(mine) else None
            if row != copy:
                # A copy past the chain's rows names the next seq the beneficiary would have.
                seq = int(row["seq"]) if row is not None else int(rows[-1]["seq"]) + 1
                if worst is None or seq < worst[0]:
                    worst = (seq, name)
                break
    return worst


def _corrections(stored: Sequence[JSONDoc], rebuilt: Sequence[JSONDoc], *, ts: int
                 ) -> list[LedgerDraft]:
    """Return the entries that bring stored credits per (beneficiary, order, rule) to rebuilt."""
    def totals(rows: Sequence[JSONDoc]) -> dict[tuple[str, str, str], tuple[int, JSONDoc]]:
        out: dict[tuple[str, str, str], tuple[int, JSONDoc]] = {}
        for r in rows:
            if r["kind"] == "withheld":
                continue
            key = (r["beneficiary"], r["order_id"], r["rule"])
            total, first = out.get(key, (0, r))
            out[key] = (total + int(r["amount_cents"]), first)
        return out

    have, want = totals(stored), totals(rebuilt)
    drafts: list[LedgerDraft] = []
    for key in sorted(set(have) | set(want)):
        delta = want.get(key, (0, {}))[0] - have.get(key, (0, {}))[0]
        if delta == 0:
            continue
        model = want[key][1] if key in want else have[key][1]
        drafts.append(LedgerDraft.model_validate(model | {
            "kind": "credit" if delta > 0 else "reversal", "amount_cents": delta,
            "reason": CORRECTION_REASON, "ts": ts}))
    return drafts
