"""Orders back to the recommender (issue 15 point 7), from the plan's event log.

Every accepted order event is in the log ``plan.events`` before anything is applied, so the
recommender learns from the log, not from the webhook that happened to apply it: an order
accepted by a process that crashed before applying it, and applied later by another
process's catch-up, is learnt from just the same. A cursor (``plan.feedback``) says how far
the log has been fed back; the learner itself is exactly-once per order
(nlp/feedback.py), so two processes reading the same events, or a crash between learning
and moving the cursor, count nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cards.plan_store import LOG_EVENTS
from cards.pseudonyms import Pseudonyms
from nlp.feedback import OrderSignal
from store import Batch, CommitResult, Store

log = logging.getLogger("mingpian.cards.feedback")

NS_FEEDBACK = "plan.feedback"
CURSOR = "cursor"
PAGE = 200  # events read per round


class OrderFeedback:
    """Feeds the plan's order events to a learner, in log order, each at least once (the
    learner makes it exactly once)."""

    def __init__(self, store: Store, *, learn: Callable[[OrderSignal], None],
                 provider_of: Callable[[str], str | None]) -> None:
        self.store = store
        self.learn = learn
        self.provider_of = provider_of  # a ref code → the provider of its card
        self.names = Pseudonyms(store)

    def pending(self) -> int:
        """Return how many logged events have not been fed back yet."""
        rec = self.store.get(NS_FEEDBACK, CURSOR)
        return self.store.log_length(LOG_EVENTS) - (int(rec.doc["seq"]) if rec else 0)

    def run(self) -> int:
        """Feed back every logged event after the cursor; return how many this call did."""
        done = 0
        while True:
            rec = self.store.get(NS_FEEDBACK, CURSOR)
            after = int(rec.doc["seq"]) if rec else 0
            events = self.store.read_log(LOG_EVENTS, after=after, limit=PAGE)
            if not events:
                return done
            orders = [d for _, d in events if d.get("type") == "order"]
            buyers = self.names.user_ids(str(d["order"]["user_id"]) for d in orders)
            for doc in orders:
                self.learn(self._signal(doc, buyers))
            batch = Batch(puts=[(NS_FEEDBACK, CURSOR, {"seq": events[-1][0]})],
                          checks=[(NS_FEEDBACK, CURSOR, rec.version if rec else 0)])
            if self.store.commit(batch) is CommitResult.OK:
                done += len(events)
            else:  # another process moved it first: carry on from where it is now
                log.info("order feedback cursor moved by another process; re-reading")

    def _signal(self, doc: dict[str, Any], buyers: dict[str, str]) -> OrderSignal:
        order = doc["order"]
        amount, refund = int(order["amount_cents"]), int(order.get("refund_cents") or 0)
        code = doc.get("ref_code")
        return OrderSignal(
            order_id=str(order["order_id"]),
            user_id=buyers.get(str(order["user_id"])),
            item_ids=tuple(str(i["item_id"]) for i in order.get("items") or ()),
            provider_id=self.provider_of(str(code)) if code else None,
            ts=int(order["ts"]),
            # Paid and not refunded counts; a full refund takes it back.
            refunded=refund > 0 and refund >= amount)
