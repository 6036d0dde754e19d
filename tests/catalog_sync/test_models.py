"""CatalogItem and Availability: the exact CONTRACTS §4 shape, validated."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from models.catalog import CatalogItem
from tests.catalog_sync.support import item_json

CONTRACT_EXAMPLE: dict[str, Any] = {
    "id": "sku-10023", "kind": "product", "title": "有机高铁米粉 6月+", "description": "...",
    "category": "母婴/辅食", "tags": ["辅食添加", "补铁"], "price_cents": 6900,
    "url": "https://mall.example.com/p/sku-10023", "image_url": "https://img.example.com/1.jpg",
    "availability": [{"provider_id": "sh-01", "price_cents": 6500, "stock": 40}],
    "active": True, "updated_at": "2026-11-01T08:00:00Z",
}


def test_contract_example_round_trips_exactly() -> None:
    assert CatalogItem.model_validate(CONTRACT_EXAMPLE).to_json() == CONTRACT_EXAMPLE


def test_defaults_and_time_normalised_to_utc_z() -> None:
    it = CatalogItem.model_validate({"id": "course-1", "kind": "course", "title": "辅食课",
                                     "price_cents": 0, "url": "http://m.example.com/c/1",
                                     "updated_at": "2026-11-01T16:00:00+08:00"})
    doc = it.to_json()
    assert doc["updated_at"] == "2026-11-01T08:00:00Z"
    assert doc["availability"] == [] and doc["active"] is True and doc["tags"] == []


@pytest.mark.parametrize(("field", "value"), [
    ("id", "has space"), ("id", "x" * 65), ("id", ""), ("id", "sku/1"),
    ("kind", "service"), ("title", "   "),
    ("price_cents", -1), ("price_cents", 1.5), ("price_cents", "6900"), ("price_cents", True),
    ("url", "javascript:alert(1)"), ("url", "ftp://mall.example.com/x"), ("url", "https://"),
    ("url", "data:text/html,hi"), ("url", "https://mall.example.com/a b"),
    ("image_url", "file:///etc/passwd"), ("active", "yes"), ("updated_at", "yesterday"),
    ("availability", [{"provider_id": "sh-01", "price_cents": -5, "stock": 1}]),
    ("availability", [{"provider_id": "sh-01", "price_cents": 5, "stock": -1}]),
    ("availability", [{"provider_id": "bad id", "price_cents": 5, "stock": 1}]),
    ("availability", [{"provider_id": "sh-01", "price_cents": 5, "stock": 1},
                      {"provider_id": "sh-01", "price_cents": 6, "stock": 2}]),
])
def test_invalid_items_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as e:
        CatalogItem.model_validate(item_json("sku-1", **{field: value}))
    assert e.value.errors()[0]["loc"][0] == field


def test_availability_semantics() -> None:
    everywhere = CatalogItem.model_validate(item_json("a", availability=[]))
    assert everywhere.is_available("sh-01") and everywhere.is_available(None)
    assert everywhere.price_at("sh-01") == 9900
    listed = CatalogItem.model_validate(item_json("b", availability=[
        {"provider_id": "sh-01", "price_cents": 8800, "stock": 3},
        {"provider_id": "bj-01", "price_cents": 9000, "stock": 0}]))
    assert listed.is_available("sh-01") and listed.price_at("sh-01") == 8800
    assert not listed.is_available("bj-01")  # out of stock there
    assert not listed.is_available("gz-01")  # not sold there
    assert listed.is_available(None)
    inactive = CatalogItem.model_validate(item_json("c", active=False))
    assert not inactive.is_available(None) and not inactive.is_available("sh-01")


def test_content_hash_follows_text_and_embedder_only() -> None:
    a = CatalogItem.model_validate(item_json("a"))
    cheaper = CatalogItem.model_validate(item_json("a", price_cents=1, availability=[
        {"provider_id": "sh-01", "price_cents": 1, "stock": 1}]))
    retitled = CatalogItem.model_validate(item_json("a", title="新标题"))
    assert a.content_hash("use") == cheaper.content_hash("use")
    assert a.content_hash("use") != retitled.content_hash("use")
    assert a.content_hash("use") != a.content_hash("hash:64")


def test_from_store_reads_back_what_was_written_and_nothing_else_skips_checks() -> None:
    """An item read back from the store (from_store: its links are not parsed again, issue
    17) equals the validated one; anything from outside still has its links checked."""
    written = CatalogItem.model_validate(CONTRACT_EXAMPLE)
    assert CatalogItem.from_store(written.to_json()) == written
    with pytest.raises(ValidationError):
        CatalogItem.model_validate({**CONTRACT_EXAMPLE, "url": "javascript:alert(1)"})
    with pytest.raises(ValidationError):  # the rest of the model is validated as ever
        CatalogItem.from_store({**CONTRACT_EXAMPLE, "price_cents": -1})
