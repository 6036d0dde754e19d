"""What a card shows and links to: catalog items, reached through a protocol.

cards/ must not import catalog_sync/ (a sibling); app/ hands in an `ItemSource` built on
the recommender and the catalog, so the card page never learns where items live.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CardItem:
    """One catalog item as a card shows it."""

    id: str
    title: str
    url: str
    price_cents: int | None = None
    kind: str = "product"
    reason: str = ""


class ItemSource(Protocol):
    """Recommendations and catalog look-ups for the card pages."""

    def recommend(self, *, viewer_id: str | None, provider_id: str | None, k: int
                  ) -> list[CardItem]:
        """Return up to k items for the viewer (None: the provider's popular items)."""

    def get_item(self, item_id: str) -> CardItem | None:
        """Return the catalog item (with its mall URL), or None if unknown or inactive."""

    def record_click(self, *, item_id: str, user_id: str | None, provider_id: str | None
                     ) -> None:
        """Count a tap on an item (popularity)."""

    def record_purchase(self, *, user_id: str, item_ids: Sequence[str], first: bool) -> None:
        """Tell the recommender the user bought these items (never recommend them again).

        first is False for a repeated delivery: remember the purchase, count no popularity.
        """


class NoItems:
    """An `ItemSource` with no catalog: cards show no items and every item link is a 404."""

    def recommend(self, *, viewer_id: str | None, provider_id: str | None, k: int  # noqa: ARG002  the ItemSource protocol's names: callers pass them by keyword
                  ) -> list[CardItem]:
        """Return no items."""
        return []

    def get_item(self, item_id: str) -> CardItem | None:  # noqa: ARG002  the protocol's signature
        """Return None."""
        return None

    def record_click(self, *, item_id: str, user_id: str | None, provider_id: str | None
                     ) -> None:
        """Do nothing."""

    def record_purchase(self, *, user_id: str, item_ids: Sequence[str], first: bool) -> None:
        """Do nothing."""
