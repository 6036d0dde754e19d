"""The cards domain for one process, built from settings (only app/ reads settings).

cards/ may not import catalog_sync/ or know the recommender's wiring, so the card pages
get an `ItemSource` from here: recommendations from `services.recommender` when the
process has one, catalog items (their mall URLs) from the catalog's store namespace.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cards.items import CardItem
from cards.ledger import DEMO_LEDGER_KEY
from cards.plan import PlanConfig
from cards.service import CardsConfig, CardsService, FilePosterCache, PosterCache, StorePosterCache
from catalog_sync.repo import NS_ITEM
from models.catalog import CatalogItem
from store import Store

if TYPE_CHECKING:
    from app.services import Services
    from app.settings import Settings

log = logging.getLogger("mingpian.cards")

_FALLBACK_SCAN = 500  # catalog items looked at when no recommender is wired


class CatalogItems:
    """An `ItemSource` over the catalog in the store and the process's recommender."""

    def __init__(self, store: Store, recommender: Callable[[], Any]) -> None:
        self.store = store
        self._recommender = recommender

    def _catalog_item(self, item_id: str) -> CatalogItem | None:
        rec = self.store.get(NS_ITEM, item_id)
        if rec is None:
            return None
        try:
            return CatalogItem.model_validate(rec.doc.get("item", rec.doc))
        except ValueError:
            log.warning("catalog item %s does not validate", item_id)
            return None

    def recommend(self, *, viewer_id: str | None, provider_id: str | None, k: int
                  ) -> list[CardItem]:
        """Return the recommender's items for the viewer, else available catalog items."""
        rec = self._recommender()
        if rec is not None:
            result = rec.for_user(viewer_id or "", k=k, provider_id=provider_id)
            return [CardItem(id=i.id, title=i.title, url=i.url, price_cents=i.price_cents,
                             kind=i.kind, reason=i.reason if viewer_id else "")
                    for i in result.items]
        out: list[CardItem] = []
        for key, record in itertools.islice(self.store.scan(NS_ITEM), _FALLBACK_SCAN):
            try:
                item = CatalogItem.model_validate(record.doc.get("item", record.doc))
            except ValueError:
                continue
            if item.is_available(provider_id):
                out.append(CardItem(id=key, title=item.title, url=item.url,
                                    price_cents=item.price_at(provider_id), kind=item.kind))
            if len(out) >= k:
                break
        return out

    def get_item(self, item_id: str) -> CardItem | None:
        """Return the active catalog item with its mall URL, or None."""
        item = self._catalog_item(item_id)
        if item is None or not item.active:
            return None
        return CardItem(id=item.id, title=item.title, url=item.url,
                        price_cents=item.price_cents, kind=item.kind)

    def record_click(self, *, item_id: str, user_id: str | None, provider_id: str | None
                     ) -> None:
        """Count the click in the recommender's popularity, when it keeps one."""
        fn = getattr(self._recommender(), "record_click", None)
        if fn is not None:
            fn(item_id, provider_id=provider_id, user_id=user_id)

    def record_purchase(self, *, user_id: str, item_ids: Sequence[str], first: bool) -> None:
        """Tell the recommender what the user bought, when it listens."""
        rec = self._recommender()
        if first and hasattr(rec, "record_order"):  # popularity and "never again" in one
            rec.record_order(list(item_ids), user_id=user_id)
        elif hasattr(rec, "record_purchase"):
            rec.record_purchase(user_id, list(item_ids))


def _old_secrets(s: Settings) -> tuple[bytes, ...]:
    """Return MINGPIAN_SHARE_SECRETS_OLD as keys: codes, tokens and cookies they signed
    still verify after a rotation."""
    if s.share_secrets_old is None:
        return ()
    return tuple(p.strip().encode() for p in s.share_secrets_old.get_secret_value().split(",")
                 if p.strip())


def build_cards(services: Services, *, clock: Callable[[], float] = time.time) -> CardsService:
    """Return the process's cards domain."""
    s = services.settings
    store = services.store
    posters: PosterCache = (FilePosterCache(s.data_dir / "posters") if store.backend == "sqlite"
                            else StorePosterCache(store))
    config = CardsConfig(
        public_base_url=s.public_base_url,
        share_secret=s.share_secret.get_secret_value().encode(),
        tz_offset_hours=s.tz_offset_hours,
        plan=PlanConfig(**s.plan.model_dump()),
        referral_policy=s.referral_policy,
        referral_window_days=s.referral_window_days,
        poster_font=str(s.poster_font) if s.poster_font else None,
        old_share_secrets=_old_secrets(s),
        visit_retention_days=s.visit_retention_days,
        viewer_token_max_ttl_s=s.viewer_token_max_ttl_s,
        ledger_key=(s.ledger_key.get_secret_value().encode() if s.ledger_key
                    else DEMO_LEDGER_KEY),
    )
    items = CatalogItems(store, lambda: getattr(services, "recommender", None))
    return CardsService(store, config=config, items=items, posters=posters, clock=clock)
