"""A card's WeCom 联系我 QR code (issue 15 point 6), made once per card and kept.

A card with a ``wecom_user_id`` shows, under "加企业微信", the QR code of a single-member
contact way (``externalcontact/add_contact_way``, type 1, scene 2) instead of a bare user
id a customer cannot do anything with. The contact way is created once per card and member
and stored (``cards.contact_way/<card_id>``); a card whose member changes gets a new one.
One process creates it (a store lock), and a failure is not retried for a few minutes, so a
WeCom outage does not turn every page view into an upstream call.

cards/ does not talk to WeCom itself: app/ hands in the function that does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cards.repo import Card
from store import Store

log = logging.getLogger("mingpian.cards")

NS_CONTACT_WAY = "cards.contact_way"
RETRY_AFTER_FAILURE_S = 300
# (card id, member userid) → (config_id, qr_code URL); raises when WeCom refuses.
MakeContactWay = Callable[[str, str], tuple[str, str]]


class ContactWays:
    """The 联系我 QR code of each card (None where WeCom is not configured)."""

    def __init__(self, store: Store, *, make: MakeContactWay | None) -> None:
        self.store = store
        self.make = make

    def stored(self, card: Card) -> str | None:
        """Return the card's QR code URL if one was made for its current member."""
        if not card.wecom_user_id:
            return None
        rec = self.store.get(NS_CONTACT_WAY, card.id)
        if rec is None or rec.doc.get("userid") != card.wecom_user_id:
            return None
        return str(rec.doc["qr_code"])

    def ensure(self, card: Card) -> str | None:
        """Return the card's QR code URL, making the contact way first if there is none.

        Best effort: None when WeCom is not configured or refused (logged; retried after
        a pause)."""
        found = self.stored(card)
        if found is not None or self.make is None or not card.wecom_user_id:
            return found
        if not self.store.first_seen(f"contact-way-try:{card.id}:{card.wecom_user_id}",
                                     RETRY_AFTER_FAILURE_S):
            return None  # another request is making it, or it failed a moment ago
        with self.store.lock(f"contact-way:{card.id}", ttl_s=30, wait_s=10) as got:
            if not got:
                return None
            found = self.stored(card)
            if found is not None:
                return found
            try:
                config_id, qr_code = self.make(card.id, card.wecom_user_id)
            except Exception:
                log.exception("making the 联系我 QR code of card %s failed", card.id)
                return None
            self.store.put(NS_CONTACT_WAY, card.id, {"userid": card.wecom_user_id,
                                                     "config_id": config_id,
                                                     "qr_code": qr_code})
            return qr_code
