"""Catalog items: products and courses with per-provider availability (CONTRACTS §4)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, Protocol
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from models.ids import Id
from models.times import as_utc, format_rfc3339

ItemKind = Literal["product", "course"]
KINDS: tuple[ItemKind, ...] = ("product", "course")

MAX_CENTS = 10**12  # ten billion yuan: anything above is a unit mistake


MAX_URL_LEN = 2048  # what browsers and the mall's own links stay under

STORED = "stored"  # validation context key: the value comes back from our own store
_BAD_URL_CHAR = re.compile(r"[\s\x00-\x1f\x7f]")


def _check_http_url(value: str, info: ValidationInfo) -> str:
    if isinstance(info.context, dict) and info.context.get(STORED):
        return value  # checked when it was written (CatalogItem.from_store)
    if len(value) > MAX_URL_LEN:
        raise ValueError(f"URL is longer than {MAX_URL_LEN} characters")
    if _BAD_URL_CHAR.search(value):
        raise ValueError("URL contains whitespace or control characters")
    parts = urlsplit(value)
    # Links end up in cards and redirects: javascript:, data:, file: … are never acceptable.
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("URL scheme must be http or https")
    if not parts.hostname:
        raise ValueError("URL has no host")
    return value


HttpUrlStr = Annotated[str, AfterValidator(_check_http_url)]
Cents = Annotated[int, Field(ge=0, le=MAX_CENTS, strict=True)]
Stock = Annotated[int, Field(ge=0, le=10**9, strict=True)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
Timestamp = Annotated[datetime, AfterValidator(as_utc), PlainSerializer(format_rfc3339)]


class Availability(BaseModel):
    """One regional service provider (the middle "B" of S2B2C) selling an item."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    provider_id: Id
    price_cents: Cents
    stock: Stock


class _Row(Protocol):
    """A provider's row: Availability (an item's) or Offer (a listing's)."""

    @property
    def provider_id(self) -> str: ...
    @property
    def price_cents(self) -> int: ...
    @property
    def stock(self) -> int: ...


class _Offers:
    """Where an item is sold and at what price: asked of a CatalogItem and of its Listing
    alike (the recommender's final check reads listings), answered once here."""

    __slots__ = ()
    if TYPE_CHECKING:
        @property
        def active(self) -> bool: ...
        @property
        def price_cents(self) -> int: ...
        @property
        def availability(self) -> Sequence[_Row]: ...

    def offer(self, provider_id: str | None) -> _Row | None:
        """Return the provider's row, or None when it is not listed there."""
        if provider_id is None:
            return None
        for row in self.availability:
            if row.provider_id == provider_id:
                return row
        return None

    def is_available(self, provider_id: str | None) -> bool:
        """Return True when the item is active and (at provider_id) listed with stock > 0."""
        if not self.active:
            return False
        if provider_id is None or not self.availability:
            return True
        row = self.offer(provider_id)
        return row is not None and row.stock > 0

    def price_at(self, provider_id: str | None) -> int:
        """Return the provider's price when it lists one, else the item's price."""
        row = self.offer(provider_id)
        return row.price_cents if row is not None else self.price_cents

    def sold_somewhere(self) -> bool:
        """Return True unless the item is listed only with stock 0 (sold out everywhere)."""
        return not self.availability or any(r.stock > 0 for r in self.availability)


class CatalogItem(_Offers, BaseModel):
    """A product or course; empty ``availability`` means every provider sells it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: Id
    kind: ItemKind
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    description: Annotated[str, StringConstraints(max_length=5000)] = ""
    category: Annotated[str, StringConstraints(max_length=100)] = ""
    tags: Annotated[list[Tag], Field(max_length=32)] = Field(default_factory=list)
    price_cents: Cents
    url: HttpUrlStr
    image_url: HttpUrlStr | None = None
    availability: Annotated[list[Availability], Field(max_length=1000)] = Field(
        default_factory=list)
    active: Annotated[bool, Field(strict=True)] = True
    updated_at: Timestamp | None = None
    # A consumable (diapers, wipes): recommended again this many days after a purchase;
    # None: once bought, never again (issue 15 point 7).
    repurchase_days: Annotated[int, Field(ge=1, le=3650, strict=True)] | None = None

    @field_validator("availability")
    @classmethod
    def _one_row_per_provider(cls, rows: list[Availability]) -> list[Availability]:
        seen: set[str] = set()
        for row in rows:
            if row.provider_id in seen:
                raise ValueError(f"provider {row.provider_id!r} is listed twice")
            seen.add(row.provider_id)
        return rows

    @classmethod
    def from_store(cls, doc: dict[str, Any]) -> CatalogItem:
        """Return the item from the JSON object a store holds. Its links were checked when
        it was written, and parsing them again was a tenth of a page view's CPU (issue 17:
        ~14 items a page): the rest is validated as ever."""
        return cls.model_validate(doc, context={STORED: True})

    # -- derived values ------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Return the CONTRACTS §4 JSON object (``repurchase_days`` only when set)."""
        doc = self.model_dump(mode="json")
        if doc["repurchase_days"] is None:
            del doc["repurchase_days"]
        return doc

    def embedding_text(self) -> str:
        """Return the text whose embedding represents the item (title, category, tags, blurb)."""
        parts = [self.title, self.category, " ".join(self.tags), self.description[:400]]
        return "\n".join(p for p in parts if p)

    def content_hash(self, embedder_name: str) -> str:
        """Return a hash of the embedding text and the embedder: equal hash, equal vector."""
        h = hashlib.blake2b(digest_size=16)
        h.update(embedder_name.encode())
        h.update(b"\0")
        h.update(self.embedding_text().encode())
        return h.hexdigest()

class Offer(NamedTuple):
    """A provider's row of a :class:`Listing` (the plain-tuple twin of Availability)."""

    provider_id: str
    price_cents: int
    stock: int


@dataclass(frozen=True, slots=True)
class Listing(_Offers):
    """What a recommendation shows of an item and what decides whether it may be shown: the
    item less its description, category, tags, image and dates. A 100k catalog's listings
    fit in memory where its items do not (issue 17: reading and parsing the items a page
    view ends with was a fifth of its CPU when they missed the item cache)."""

    id: str
    kind: ItemKind
    title: str
    url: str
    price_cents: int
    active: bool
    availability: tuple[Offer, ...]

    @classmethod
    def from_store(cls, doc: dict[str, Any]) -> Listing:
        """Return the listing of an item JSON object our store holds (validated when it was
        written, see CatalogItem.from_store; absent fields take CatalogItem's defaults)."""
        return cls(id=doc["id"], kind=doc["kind"], title=doc["title"], url=doc["url"],
                   price_cents=doc["price_cents"], active=doc.get("active", True),
                   availability=tuple(Offer(r["provider_id"], r["price_cents"], r["stock"])
                                      for r in doc.get("availability") or ()))
