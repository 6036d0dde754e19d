"""Learning from what people do (issue 15 point 7): views, clicks and orders feed back into
the person's profile and into popularity (overall and per provider, decaying), each exactly
once.

Each event has a key (an order's id, a mall event's id, a visitor's tap of an item on a
day). Popularity is counted in one ``reco`` commit carrying the key's once-marker; the
profile is folded in through :meth:`nlp.profile.ProfileRepo.apply_many` as a *signal* (a
ChatMessage of type ``signal:…``: it moves tag weights and the interest vector but counts as
no message) whose message id is derived from the key, so its once-marker lives in the
profiles' family. Running the same event again, after a crash anywhere in between, adds
nothing twice: each family's marker answers DUPLICATE for what it already holds.

Orders count when paid (or completed) and not refunded: a per-order state record
(``reco.order``) decides, in the same commit as popularity and the buyer's purchases,
whether this event counts the order, takes it back (a full refund after it counted) or
changes nothing (a repeat, or a refund that came first), so the order of arrival does not
matter. The profile follows that state with its own markers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from models.catalog import CatalogItem
from models.messages import ChatMessage
from nlp.profile import SIGNAL_PREFIX, ProfileRepo
from nlp.signals import NS_BOUGHT, Signals
from nlp.tagging import TagHit, TagResult
from store.base import Batch, CommitResult, Store
from store.retry import AGAIN, Again, retry

Action = Literal["view", "click", "order"]

NS_ORDER_STATE = "reco.order"  # order id → {"counted": bool, "refunded": bool}
# What one event says about a person's interest in each of the item's tags (a chat message
# that names a tag says about 0.5–0.9): a view a little, a tap more, a purchase most.
PROFILE_WEIGHTS: dict[str, float] = {"view": 0.1, "click": 0.3, "order": 1.0}
MAX_ITEM_TAGS = 3  # an item's first tags are its taxonomy tags (catalog README)


class ItemReader(Protocol):
    """Catalog items by id (catalog.repo.CatalogRepo)."""

    def get_items(self, ids: Sequence[str]) -> dict[str, CatalogItem]:
        """Return the items that exist among ids."""


Vectors = Callable[[Sequence[str]], Mapping[str, npt.NDArray[np.float32]]]


@dataclass(frozen=True)
class OrderSignal:
    """What an order event tells the recommender."""

    order_id: str
    user_id: str | None  # the buyer (the person); None when unknown or erased
    item_ids: tuple[str, ...]
    provider_id: str | None
    ts: int
    refunded: bool  # fully refunded: the order no longer counts


def signal_id(key: str) -> str:
    """Return the message id a signal with this key is folded in under (an opaque id)."""
    return "fb:" + hashlib.sha256(key.encode()).hexdigest()[:40]


class Feedback:
    """Feeds views, clicks and orders back into profiles and popularity, exactly once."""

    def __init__(self, store: Store, *, profiles: ProfileRepo, signals: Signals,
                 items: ItemReader, vectors: Vectors | None = None,
                 known_tag: Callable[[str], bool] | None = None) -> None:
        self.store = store
        self.profiles = profiles
        self.signals = signals
        self.items = items
        self.vectors = vectors
        self.known_tag = known_tag

    def record(self, *, action: Literal["view", "click"], key: str, item_id: str,
               user_id: str | None, provider_id: str | None, ts: int) -> bool:
        """Count a view or a click of an item once per key (popularity), and fold it into
        the person's profile when user_id names one; return whether it was counted now."""
        counted = self.signals.record(action, [item_id], provider_id=provider_id, ts=ts,
                                      once=f"fb:{key}")
        if user_id:
            self.learn(user_id, key=key, action=action, item_ids=[item_id], ts=ts)
        return counted

    def learn(self, user_id: str, *, key: str, action: Action, item_ids: Sequence[str],
              ts: int, sign: int = 1) -> bool:
        """Fold what the person did into their profile once per key (sign -1 takes an
        order back); return whether it was folded in now."""
        result = self._signal(action, item_ids, sign=sign)
        if result is None:
            return False
        msg = ChatMessage(msg_id=signal_id(key), user_id=user_id, group_id=None, text="",
                          ts=ts, msg_type=f"{SIGNAL_PREFIX}{action}")
        return self.profiles.apply_many([(msg, result)])[0]

    def _signal(self, action: Action, item_ids: Sequence[str], *, sign: int
                ) -> TagResult | None:
        """Return the tags (and, for a positive signal, the items' mean vector) to fold."""
        w = PROFILE_WEIGHTS[action] * sign
        items = self.items.get_items(list(item_ids))
        hits: dict[str, float] = {}
        for item in items.values():
            tags = [t for t in item.tags if self.known_tag is None or self.known_tag(t)]
            for t in tags[:MAX_ITEM_TAGS]:
                hits[t] = hits.get(t, 0.0) + w
        vector = None
        if sign > 0 and self.vectors is not None and items:
            found = list(self.vectors(list(items)).values())
            if found:
                mean = np.mean(np.stack(found).astype(np.float64), axis=0)
                norm = float(np.linalg.norm(mean))
                # The vector counts as much as the signal says, relative to a message.
                vector = (mean / norm * abs(w)).astype(np.float32) if norm > 0 else None
        if not hits and vector is None:
            return None
        return TagResult(tags=[TagHit(t, c) for t, c in hits.items()], vector=vector,
                         contentless=False)

    # -- orders -------------------------------------------------------------------------
    def learn_order(self, sig: OrderSignal) -> None:
        """Apply one order event: count the order once when paid and not refunded, take it
        back once on a full refund after it counted (popularity, purchases, profile)."""
        state = self._order_state(sig)
        if sig.user_id and sig.item_ids and state["counted"]:
            self.learn(sig.user_id, key=f"order:{sig.order_id}", action="order",
                       item_ids=sig.item_ids, ts=sig.ts)
            if state["refunded"]:
                self.learn(sig.user_id, key=f"order-refund:{sig.order_id}", action="order",
                           item_ids=sig.item_ids, ts=sig.ts, sign=-1)

    def _order_state(self, sig: OrderSignal) -> dict[str, bool]:
        """Commit the order's new state with its popularity and purchases; return it."""

        def attempt(_: int) -> dict[str, bool] | Again:
            rec = self.store.get(NS_ORDER_STATE, sig.order_id)
            was = {"counted": False, "refunded": False} | (dict(rec.doc) if rec else {})
            now = dict(was)
            sign = 0
            if sig.refunded and not was["refunded"]:
                now["refunded"] = True
                sign = -1 if was["counted"] else 0
            elif not sig.refunded and not was["counted"] and not was["refunded"]:
                now["counted"] = True
                sign = 1
            if now == was:
                return now
            batch = Batch(puts=[(NS_ORDER_STATE, sig.order_id, now)],
                          checks=[(NS_ORDER_STATE, sig.order_id, rec.version if rec else 0)])
            if sign and sig.item_ids:
                batch.incrs += self.signals.popularity_incrs(
                    "order", sig.item_ids, provider_id=sig.provider_id, ts=sig.ts, sign=sign)
                if sig.user_id:
                    bought = self.store.get(NS_BOUGHT, sig.user_id)
                    batch.puts.append((NS_BOUGHT, sig.user_id, self.signals.bought_doc(
                        bought, sig.item_ids, ts=sig.ts, bought=sign > 0)))
                    batch.checks.append((NS_BOUGHT, sig.user_id,
                                         bought.version if bought else 0))
            return now if self.store.commit(batch) is CommitResult.OK else AGAIN

        return retry(attempt, what=f"feedback of order {sig.order_id!r}")
