"""The links a group's bot reply carries (issue 15 point 5), built for bot/ from cards/.

bot/ and cards/ are siblings: the replier gets a plain function, card id → the card's share
page and an item's tracked link through the card owner's own share code (the one `/c/`
links and the poster's QR use), so a click lands on the salesperson's radar and the order
that follows binds to them (`ref=<code>`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import quote

from app.settings import Settings
from bot.group_settings import CardLinksFor, ReplyLinks
from cards.repo import Cards
from cards.share import Shares
from store import Store


def card_links_for(settings: Settings, store: Store, *,
                   clock: Callable[[], float] = time.time) -> CardLinksFor:
    """Return card id → its reply links (None for an unknown card)."""
    old = settings.share_secrets_old.get_secret_value() if settings.share_secrets_old else ""
    cards = Cards(store, clock=clock)
    shares = Shares(store, secret=settings.share_secret.get_secret_value().encode(),
                    tz_offset_hours=settings.tz_offset_hours, clock=clock,
                    old_secrets=tuple(p.strip().encode() for p in old.split(",") if p.strip()))
    base = settings.public_base_url.rstrip("/")

    def links(card_id: str) -> ReplyLinks | None:
        card = cards.get_card(card_id)
        if card is None:
            return None
        code = shares.create(card_id=card.id, sharer_id=card.staff_id).code
        return ReplyLinks(card_url=f"{base}/s/{code}",
                          item_url=lambda item_id: f"{base}/r/{code}/{quote(item_id, safe='')}")

    return links
