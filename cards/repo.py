"""Cards: a salesperson's business card (CONTRACTS §6), validated and versioned in the store.

Store: ``card.card/<card_id>``; the record's version is the card's version (posters are
cached per version).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from models.errors import NotFoundError
from models.ids import Id
from models.times import rfc3339
from store import Batch, CommitResult, Store
from store.retry import AGAIN, Again, retry

NS_CARD = "card.card"

_PHONE_RE = re.compile(r"^\+?[0-9]{3,20}$")
_PHONE_SEPARATORS = re.compile(r"[\s\-()]")


def _phone(value: str) -> str:
    digits = _PHONE_SEPARATORS.sub("", value)
    if digits and not _PHONE_RE.match(digits):
        raise ValueError("phone must be 3-20 digits, optionally with a leading +")
    return digits


def _http_url(value: str) -> str:
    if not value:
        return value
    if any(c.isspace() or c < " " for c in value):  # no whitespace or C0 controls
        raise ValueError("URL must not contain whitespace or control characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("only http(s) URLs are accepted")
    return value


Phone = Annotated[str, Field(max_length=32), AfterValidator(_phone)]
HttpUrlText = Annotated[str, Field(max_length=2048), AfterValidator(_http_url)]


class CardFields(BaseModel):
    """The fields of `POST /v1/cards`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    staff_id: Id
    name: str = Field(min_length=1, max_length=64)
    title: str = Field(default="", max_length=64)
    company: str = Field(default="", max_length=128)
    phone: Phone = ""
    avatar_url: HttpUrlText = ""
    bio: str = Field(default="", max_length=1000)
    provider_id: Id | None = None
    wecom_user_id: Id | None = None


class CardPatch(BaseModel):
    """The fields of `PATCH /v1/cards/{card_id}`: any subset of the card's."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    staff_id: Id | None = None
    name: str | None = Field(default=None, min_length=1, max_length=64)
    title: str | None = Field(default=None, max_length=64)
    company: str | None = Field(default=None, max_length=128)
    phone: Phone | None = None
    avatar_url: HttpUrlText | None = None
    bio: str | None = Field(default=None, max_length=1000)
    provider_id: Id | None = None
    wecom_user_id: Id | None = None


@dataclass(frozen=True)
class Card:
    """A stored card and its version."""

    id: str
    staff_id: str
    name: str
    title: str
    company: str
    phone: str
    avatar_url: str
    bio: str
    provider_id: str | None
    wecom_user_id: str | None
    created_at: str
    updated_at: str
    version: int

    @classmethod
    def from_doc(cls, doc: dict[str, Any], version: int) -> Card:
        """Return the card stored as doc."""
        return cls(
            id=str(doc["id"]), staff_id=str(doc["staff_id"]), name=str(doc["name"]),
            title=str(doc.get("title", "")), company=str(doc.get("company", "")),
            phone=str(doc.get("phone", "")), avatar_url=str(doc.get("avatar_url", "")),
            bio=str(doc.get("bio", "")), provider_id=doc.get("provider_id"),
            wecom_user_id=doc.get("wecom_user_id"), created_at=str(doc["created_at"]),
            updated_at=str(doc["updated_at"]), version=version,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the card as JSON (without URLs; the API adds them)."""
        return {
            "id": self.id, "staff_id": self.staff_id, "name": self.name, "title": self.title,
            "company": self.company, "phone": self.phone, "avatar_url": self.avatar_url,
            "bio": self.bio, "provider_id": self.provider_id,
            "wecom_user_id": self.wecom_user_id, "created_at": self.created_at,
            "updated_at": self.updated_at, "version": self.version,
        }


class Cards:
    """Card CRUD over the store."""

    def __init__(self, store: Store, *, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    def create_card(self, fields: CardFields) -> Card:
        """Store a new card; return it with its id."""
        now = rfc3339(self.clock())

        def attempt(_: int) -> Card | Again:
            # A fresh random id each time: a clash with an existing card is simply redrawn.
            card_id = "c" + secrets.token_hex(8)
            doc = {"id": card_id, **fields.model_dump(), "created_at": now, "updated_at": now}
            batch = Batch(puts=[(NS_CARD, card_id, doc)], checks=[(NS_CARD, card_id, 0)])
            if self.store.commit(batch) is CommitResult.OK:
                return Card.from_doc(doc, 1)
            return AGAIN

        return retry(attempt, what="a new card id", attempts=10)

    def get_card(self, card_id: str) -> Card | None:
        """Return the card, or None."""
        rec = self.store.get(NS_CARD, card_id)
        return None if rec is None else Card.from_doc(rec.doc, rec.version)

    def get_card_or_raise(self, card_id: str) -> Card:
        """Return the card or raise NotFoundError."""
        card = self.get_card(card_id)
        if card is None:
            raise NotFoundError(f"no card {card_id!r}")
        return card

    def update_card(self, card_id: str, patch: CardPatch) -> Card:
        """Apply a partial update; return the new card (its version goes up)."""
        changes = patch.model_dump(exclude_unset=True)

        def attempt(_: int) -> Card | Again:
            rec = self.store.get(NS_CARD, card_id)
            if rec is None:
                raise NotFoundError(f"no card {card_id!r}")
            doc = {**rec.doc, **changes, "updated_at": rfc3339(self.clock())}
            batch = Batch(puts=[(NS_CARD, card_id, doc)], checks=[(NS_CARD, card_id, rec.version)])
            if self.store.commit(batch) is CommitResult.OK:
                return Card.from_doc(doc, rec.version + 1)
            return AGAIN

        return retry(attempt, what=f"card {card_id!r}")
