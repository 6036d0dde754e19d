"""A Listing (what the recommender's final check reads, issue 17) answers every question the
check asks exactly as the full CatalogItem it was stored as."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from models.catalog import CatalogItem, Listing
from nlp.recommend import in_stock

PROVIDERS = ["sh-01", "bj-02", "gz-03"]

rows = st.lists(st.fixed_dictionaries({
    "provider_id": st.sampled_from(PROVIDERS),
    "price_cents": st.integers(0, 10**6),
    "stock": st.integers(0, 2),
}), max_size=3, unique_by=lambda r: r["provider_id"])

docs = st.fixed_dictionaries({
    "id": st.sampled_from(["a", "sku-1", "course-9"]),
    "kind": st.sampled_from(["product", "course"]),
    "title": st.text(min_size=1, max_size=20).filter(str.strip),
    "price_cents": st.integers(0, 10**6),
    "url": st.just("https://mall.example.com/p/1"),
    "availability": rows,
    "active": st.booleans(),
    "description": st.text(max_size=50),
})


@settings(max_examples=300)
@given(doc=docs)
def test_listing_answers_as_the_item(doc: dict[str, Any]) -> None:
    item = CatalogItem.model_validate(doc)
    listing = Listing.from_store(item.to_json())
    assert (listing.id, listing.kind, listing.title, listing.url, listing.price_cents,
            listing.active) == (item.id, item.kind, item.title, item.url, item.price_cents,
                                item.active)
    for provider in [None, *PROVIDERS, "nowhere"]:
        assert listing.is_available(provider) == item.is_available(provider)
        assert listing.price_at(provider) == item.price_at(provider)
        assert in_stock(listing, provider) == in_stock(item, provider)
    assert listing.sold_somewhere() == item.sold_somewhere() == (
        not doc["availability"] or any(r["stock"] > 0 for r in doc["availability"]))


def test_listing_of_an_old_record_takes_the_items_defaults() -> None:
    """Records written before a field existed read as CatalogItem reads them."""
    doc = {"id": "a", "kind": "product", "title": "旧", "price_cents": 5,
           "url": "https://mall.example.com/p/a"}
    listing, item = Listing.from_store(doc), CatalogItem.from_store(doc)
    assert (listing.active, listing.availability) == (item.active, ()) == (True, ())
