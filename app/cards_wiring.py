"""The cards domain for one process, built from settings (only app/ reads settings).

cards/ does not know how the recommender is wired (app/ builds it), so the card pages get
an `ItemSource` from here: recommendations from the process's recommender, catalog items
(their mall URLs) from the catalog.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from cards.contact_way import MakeContactWay
from cards.items import CardItem
from cards.ledger import DEMO_LEDGER_KEY
from cards.service import CardsConfig, CardsService, FilePosterCache, PosterCache, StorePosterCache
from cards.viewer import ANONYMOUS_PREFIX
from catalog.repo import CatalogRepo
from nlp.feedback import Feedback
from nlp.recommend import Recommender
from store import Store

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger("mingpian.cards")


class CatalogItems:
    """An `ItemSource` over the catalog and the process's recommender."""

    def __init__(self, catalog: CatalogRepo, recommender: Recommender, *,
                 feedback: Feedback | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.catalog = catalog
        self._recommender = recommender
        self._feedback = feedback  # a known visitor's tap feeds their profile (issue 15)
        self._clock = clock

    def recommend(self, *, viewer_id: str | None, provider_id: str | None, k: int
                  ) -> list[CardItem]:
        """Return the recommender's items for the viewer (popular ones for a stranger)."""
        result = self._recommender.for_user(viewer_id or "", k=k, provider_id=provider_id)
        return [CardItem(id=i.id, title=i.title, url=i.url, price_cents=i.price_cents,
                         kind=i.kind, reason=i.reason if viewer_id else "")
                for i in result.items]

    def get_item(self, item_id: str) -> CardItem | None:
        """Return the active catalog item with its mall URL, or None."""
        item = self.catalog.get_active(item_id)
        if item is None:
            return None
        return CardItem(id=item.id, title=item.title, url=item.url,
                        price_cents=item.price_cents, kind=item.kind)

    def record_click(self, *, item_id: str, user_id: str | None, provider_id: str | None
                     ) -> None:
        """Count the click in the recommender's popularity and, for a known visitor, in
        their profile (once per visitor, item and day)."""
        self._recommender.record_click(item_id, provider_id=provider_id, user_id=user_id)
        if self._feedback is not None and user_id and not user_id.startswith(ANONYMOUS_PREFIX):
            now = int(self._clock())
            self._feedback.learn(user_id, key=f"click:{user_id}:{item_id}:{now // 86_400}",
                                 action="click", item_ids=[item_id], ts=now)

    def record_purchase(self, *, user_id: str, item_ids: Sequence[str], first: bool) -> None:
        """Tell the recommender what the user bought (a first report also counts the
        order's popularity)."""
        if first:  # popularity and "never again" in one
            self._recommender.record_order(list(item_ids), user_id=user_id)
        else:
            self._recommender.record_purchase(user_id, list(item_ids))


def _old_secrets(s: Settings) -> tuple[bytes, ...]:
    """Return MINGPIAN_SHARE_SECRETS_OLD as keys: codes, tokens and cookies they signed
    still verify after a rotation."""
    if s.share_secrets_old is None:
        return ()
    return tuple(p.strip().encode() for p in s.share_secrets_old.get_secret_value().split(",")
                 if p.strip())


def build_cards(s: Settings, store: Store, *, catalog: CatalogRepo, recommender: Recommender,
                clock: Callable[[], float] = time.time,
                make_contact_way: MakeContactWay | None = None,
                feedback: Feedback | None = None) -> CardsService:
    """Return the process's cards domain over the store, its pages recommending through
    ``recommender``."""
    posters: PosterCache = (FilePosterCache(s.data_dir / "posters") if store.backend == "sqlite"
                            else StorePosterCache(store))
    config = CardsConfig(
        public_base_url=s.public_base_url,
        share_secret=s.share_secret.get_secret_value().encode(),
        tz_offset_hours=s.tz_offset_hours,
        plan=s.plan,
        referral_policy=s.referral_policy,
        referral_window_days=s.referral_window_days,
        poster_font=str(s.poster_font) if s.poster_font else None,
        old_share_secrets=_old_secrets(s),
        visit_retention_days=s.visit_retention_days,
        viewer_token_max_ttl_s=s.viewer_token_max_ttl_s,
        ledger_key=(s.ledger_key.get_secret_value().encode() if s.ledger_key
                    else DEMO_LEDGER_KEY),
    )
    items = CatalogItems(catalog, recommender, feedback=feedback, clock=clock)
    return CardsService(store, config=config, items=items, posters=posters, clock=clock,
                        make_contact_way=make_contact_way,
                        learn_order=feedback.learn_order if feedback is not None else None)
