"""Catalog webhooks of the mall (CONTRACTS §4): upsert and delete items, report events."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel, ConfigDict, Field

from app.api.batch import batch_examples, batch_of
from app.deps import ApiKey, CatalogServiceDep, RecommenderDep, ServicesDep
from models.errors import ValidationFailed
from models.ids import ID_PATTERN, Id

router = APIRouter(prefix="/v1/catalog", tags=["catalog"], dependencies=[ApiKey])

_EXAMPLE = {
    "id": "sku-10023", "kind": "product", "title": "有机高铁米粉 6月+",
    "description": "含铁强化，6 月龄以上宝宝的第一口辅食。", "category": "母婴/辅食",
    "tags": ["辅食添加", "补铁"], "price_cents": 6900,
    "url": "https://mall.example.com/p/sku-10023",
    "image_url": "https://mall.example.com/img/sku-10023.jpg",
    "availability": [{"provider_id": "sh-01", "price_cents": 6500, "stock": 40}],
    "active": True, "updated_at": "2026-11-01T08:00:00Z",
}


class ItemRejected(BaseModel):
    """An item of the request that was not accepted, by its position."""

    index: int
    id: str | None
    error: str
    details: list[dict[str, Any]]


class ItemsUpserted(BaseModel):
    """How the request's items fared."""

    received: int
    accepted: int
    created: int
    updated: int
    unchanged: int
    stale: int  # older (updated_at) than the stored copy: ignored
    embedded: int  # items whose text changed and were embedded again
    rejected: int
    errors: list[ItemRejected]


class ItemDeleted(BaseModel):
    """The answer to a delete."""

    id: str
    deleted: bool


class EventIn(BaseModel):
    """A shopper's interaction with an item, for popularity."""

    model_config = ConfigDict(extra="forbid")

    event: Literal["view", "click", "order"]
    item_id: Id
    provider_id: Id | None = None
    user_id: Id | None = None
    # The mall's id of this event: a repeat with the same id counts once (issue 15).
    event_id: Id | None = None
    ts: int | None = Field(default=None, ge=0, lt=10**11)  # Unix seconds; missing = now


ItemId = Annotated[str, Path(pattern=ID_PATTERN, description="the item's id")]


@router.post("/items", response_model=ItemsUpserted)
def upsert_items(
    catalog: CatalogServiceDep,
    body: Annotated[dict[str, Any], Body(openapi_examples=batch_examples("items", _EXAMPLE))],
) -> dict[str, Any]:
    """Upsert one item or {"items": [...]} (≤ 1000); invalid items are reported by index.

    Only items whose embedding text changed are embedded again; an item older (by
    ``updated_at``) than the stored copy is ignored. A single invalid item is a 422.
    """
    single = "items" not in body
    report = catalog.upsert(batch_of(body, "items"))
    if single and report.errors:
        err = report.errors[0]
        raise ValidationFailed(f"invalid item: {err.message}", details=err.to_json()["details"])
    return report.to_json()


@router.get("/items/{item_id}")
def get_item(item_id: ItemId, catalog: CatalogServiceDep) -> dict[str, Any]:
    """Return one item as stored (CONTRACTS §4)."""
    return catalog.item_json(item_id)


@router.delete("/items/{item_id}", response_model=ItemDeleted)
def delete_item(item_id: ItemId, catalog: CatalogServiceDep) -> ItemDeleted:
    """Remove an item from the catalog and from every recommendation."""
    catalog.delete(item_id)
    return ItemDeleted(id=item_id, deleted=True)


@router.post("/events", status_code=202)
def record_event(event: EventIn, recommender: RecommenderDep,
                 services: ServicesDep) -> dict[str, str]:
    """Count a view, click or order of an item (popularity per provider and overall,
    decaying); a view or click with a user_id also feeds that person's profile (issue 15),
    once per `event_id`; an order with a user_id also marks the item as bought by them."""
    user = services.identities.canonical(event.user_id) if event.user_id else None
    if event.event == "order":
        recommender.record_order([event.item_id], user_id=user, provider_id=event.provider_id)
        return {"status": "recorded"}
    counted = services.feedback.record(
        action=event.event, key=f"mall:{event.event_id or uuid.uuid4().hex}",
        item_id=event.item_id, user_id=user, provider_id=event.provider_id,
        ts=event.ts if event.ts is not None else int(time.time()))
    return {"status": "recorded" if counted else "duplicate"}
