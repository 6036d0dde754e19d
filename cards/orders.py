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
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cards.ledger import GENESIS_HASH, VerifyResult, chain, verify
from cards.plan import (
    BindPolicy,
    LedgerDraft,
    MemoryPlanState,
    OrderEvent,
    PlanConfig,
    PlanEngine,
    balances,
    rewards_view,
)
from cards.plan_store import (
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
from models.errors import ConflictError, NotFoundError, StoreUnavailableError
from store import Batch, CommitResult, Store

log = logging.getLogger("mingpian.cards.orders")

JSONDoc = dict[str, Any]

LOCK = "plan.apply"
LOCK_TTL_S = 5.0
LOCK_WAIT_S = 6.0  # past the TTL: a dead holder never blocks a webhook for long
ROUND_EVENTS = 200  # events per commit
DEDUP_TTL_S = 10 * 365 * 86_400  # the mall may replay an order event at any time
CORRECTION_REASON = "rebuild:correction"


class BindingRefusedError(ConflictError):
    """A referral binding refused by the plan (self-referral, cycle, policy)."""

    code = "binding_refused"

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message, details={"reason": reason_code})
        self.code = reason_code  # the error body names the precise reason


class OrderConflictError(ConflictError):
    """An order id reused for another buyer."""

    code = "order_conflict"


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
    version: int = 0

    def to_dict(self) -> JSONDoc:
        """Return the stored form."""
        return {"events": self.events, "ledger": self.ledger, "head": self.head}


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
    return LedgerDraft.from_dict(row).to_dict()


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
    ) -> None:
        self.store = store
        self.config = config
        self.policy = policy
        self.window_days = window_days
        self.resolve_code = resolve_code
        self.clock = clock
        self.names = Pseudonyms(store)

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
        """Accept an order webhook (user ids in event), then apply it; duplicates change nothing."""
        sharer = self.resolve_code(ref_code) if ref_code else None
        once = f"plan-order:{event.order_id}:{event.status}:{event.refund_cents}"
        for _ in range(10):
            buyer = self._buyer_name(event)
            res = self.names.resolve([u for u in (None if buyer else event.user_id, sharer) if u])
            if buyer is None:
                buyer = res.names[event.user_id]
            plan_event = replace(event, user_id=buyer,
                                 referrer_id=res.names[sharer] if sharer else None)
            doc = self._stamp({"type": "order", "order": plan_event.to_dict(),
                               "ref_code": ref_code})
            batch = res.add_to(Batch(appends=[(LOG_EVENTS, doc)], once=once,
                                     once_ttl_s=DEDUP_TTL_S))
            result = self.store.commit(batch)
            if result is CommitResult.DUPLICATE:
                return Submitted(duplicate=True, outcome=None)
            if result is CommitResult.OK:
                return self._answer(doc["event_id"], apply)
        raise StoreUnavailableError("could not record the order event (too many races)")

    def submit_bind(self, user_id: str, *, code: str, apply: bool = True) -> Submitted:
        """Accept a binding of user_id to the sharer of code, then apply it."""
        sharer = self.resolve_code(code)
        if sharer is None:
            raise NotFoundError(f"unknown share code {code!r}")
        if sharer == user_id:
            raise BindingRefusedError("self_referral", "a user cannot refer itself")
        for _ in range(10):
            res = self.names.resolve([user_id, sharer])
            doc = self._stamp({"type": "bind", "user_id": res.names[user_id],
                               "referrer_id": res.names[sharer], "ts": int(self.clock()),
                               "code": code})
            if self.store.commit(res.add_to(Batch(appends=[(LOG_EVENTS, doc)]))) \
                    is CommitResult.OK:
                return self._answer(doc["event_id"], apply)
        raise StoreUnavailableError("could not record the binding (too many races)")

    def _answer(self, event_id: str, apply: bool) -> Submitted:
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
        return Cursor(int(d["events"]), int(d["ledger"]), str(d["head"]), rec.version)

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
        for _ in range(50):
            cur = self.cursor()
            events = self.store.read_log(LOG_EVENTS, after=cur.events, limit=ROUND_EVENTS)
            if not events:
                return 0
            state = StorePlanState(self.store)
            rows: list[JSONDoc] = []
            outcomes: list[tuple[str, str, JSONDoc]] = []
            head, ledger_len = cur.head, cur.ledger
            for seq, doc in events:
                outcome, drafts = apply_event(state, doc)
                chained = chain([d.to_dict() for d in drafts], prev_hash=head,
                                start_seq=ledger_len + 1)
                if chained:
                    head, ledger_len = chained[-1]["hash"], chained[-1]["seq"]
                rows += chained
                out = outcome.to_dict() | {"seq": seq, "entries": [r["seq"] for r in chained]}
                outcomes.append((NS_OUTCOME, str(doc.get("event_id", f"seq-{seq}")), out))
            new = Cursor(events[-1][0], ledger_len, head)
            batch = Batch(
                puts=[*state.puts(), *outcomes, (NS_META, CURSOR_KEY, new.to_dict())],
                appends=[(LOG_LEDGER, r) for r in rows]
                + [(beneficiary_log(r["beneficiary"]), r) for r in rows],
                checks=[(NS_META, CURSOR_KEY, cur.version)],
            )
            if self.store.commit(batch) is CommitResult.OK:
                return len(events)
            log.info("another applier advanced the plan cursor; re-reading")
        raise StoreUnavailableError("the plan applier lost 50 races in a row")

    # ------------------------------------------------------------------ views

    def _iter_log(self, name: str) -> Iterator[tuple[int, JSONDoc]]:
        after = 0
        while True:
            page = self.store.read_log(name, after=after, limit=1000)
            yield from page
            if len(page) < 1000:
                return
            after = page[-1][0]

    def _to_user_ids(self, names: Sequence[str]) -> dict[str, str]:
        linked = self.names.user_ids(names)
        return {n: linked.get(n, n) for n in names}

    def rewards(self, user_id: str) -> JSONDoc:
        """Return the body of `GET /v1/rewards?user_id=U`."""
        name = self.names.get(user_id)
        if name is None:
            return {"entries": [], "balances": {"pending_cents": 0, "payable_cents": 0}}
        rows = [row for _, row in self._iter_log(beneficiary_log(name))]
        view = rewards_view(rows, user_id=name, now_ts=int(self.clock()), config=self.config)
        ids = self._to_user_ids([u for e in view["entries"] for u in e["path"]])
        for entry in view["entries"]:
            entry["path"] = [ids[u] for u in entry["path"]]
        return view

    def referrals(self, user_id: str) -> JSONDoc:
        """Return the body of `GET /v1/referrals/{user_id}` (a user never seen is a member)."""
        name = self.names.get(user_id)
        if name is None:
            return {"role": "member", "referrer": None, "boss": None, "origin_boss": None,
                    "direct_referrals": [], "team": []}
        view = PlanEngine(self.config, StorePlanState(self.store)).referral_view(name)
        names = [v for v in (view["referrer"], view["boss"], view["origin_boss"]) if v]
        ids = self._to_user_ids(names + view["direct_referrals"] + view["team"])
        ids[name] = user_id
        for key in ("referrer", "boss", "origin_boss"):
            if view[key] is not None:
                view[key] = ids.get(view[key], view[key])
        view["direct_referrals"] = [ids[u] for u in view["direct_referrals"]]
        view["team"] = [ids[u] for u in view["team"]]
        return view

    def ledger_rows(self) -> list[JSONDoc]:
        """Return every stored ledger entry, in stored order."""
        return [row for _, row in self._iter_log(LOG_LEDGER)]

    # ------------------------------------------------------------------ audit

    def verify(self) -> VerifyResult:
        """Recompute the hash chain of the stored ledger; name the first altered entry."""
        with self.store.lock(LOCK, ttl_s=LOCK_TTL_S, wait_s=LOCK_WAIT_S):
            rows = self.ledger_rows()
            cur = self.cursor()
        result = verify(rows[: cur.ledger], head_hash=cur.head)
        if result.ok and len(rows) > cur.ledger:
            return VerifyResult(False, cur.ledger + 1,
                                f"entry {cur.ledger + 1} was never written by the applier "
                                f"(the chain's recorded head is entry {cur.ledger})")
        return result

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
                rebuilt += [d.to_dict() for d in apply_event(state, doc)[1]]
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
                x = before[name].to_dict() if name in before else {"pending_cents": 0,
                                                                    "payable_cents": 0}
                y = after[name].to_dict() if name in after else {"pending_cents": 0,
                                                                 "payable_cents": 0}
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
        rows = chain([c.to_dict() for c in corrections], prev_hash=cur.head,
                     start_seq=cur.ledger + 1)
        new = Cursor(cur.events, cur.ledger + len(rows), rows[-1]["hash"] if rows else cur.head)
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
        drafts.append(LedgerDraft.from_dict(model | {
            "kind": "credit" if delta > 0 else "reversal", "amount_cents": delta,
            "reason": CORRECTION_REASON, "ts": ts}))
    return drafts
