"""The cards domain as one object: cards, shares, pages, posters, and the plan ledger.

Built once per process by app/ from plain values (STYLE §2: only app/ reads settings).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from cards.items import CardItem, ItemSource
from cards.orders import PlanLedger
from cards.plan import BindPolicy, PlanConfig
from cards.render import PageRenderer, find_cjk_font, render_poster
from cards.repo import Card, CardFields, CardPatch, Cards
from cards.share import Share, Shares
from models.errors import NotFoundError
from store import Store

log = logging.getLogger("mingpian.cards")

PAGE_ITEMS = 6
POSTER_ITEMS = 3
POSTER_TTL_S = 7 * 86_400


class PosterCache(Protocol):
    """Where rendered posters are kept until their card changes."""

    def get(self, key: str) -> bytes | None:
        """Return the cached PNG, or None."""

    def put(self, key: str, png: bytes) -> None:
        """Keep a PNG."""


class FilePosterCache:
    """Posters as files under the data directory (embedded mode)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str) -> Path:
        return self.directory / (hashlib.sha256(key.encode()).hexdigest()[:40] + ".png")

    def get(self, key: str) -> bytes | None:
        """Return the cached PNG, or None."""
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def put(self, key: str, png: bytes) -> None:
        """Write the PNG atomically (a reader never sees half a file)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(png)
        os.replace(tmp, self._path(key))


class StorePosterCache:
    """Posters in the store with a TTL (scale-out mode: every machine shares them)."""

    NS = "poster.png"

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, key: str) -> bytes | None:
        """Return the cached PNG, or None."""
        rec = self.store.get(self.NS, key)
        return None if rec is None else base64.b64decode(rec.doc["png"])

    def put(self, key: str, png: bytes) -> None:
        """Keep the PNG for a week."""
        self.store.put(self.NS, key, {"png": base64.b64encode(png).decode()},
                       ttl_s=POSTER_TTL_S)


def with_ref(url: str, code: str) -> str:
    """Return url with `ref=<code>` set in its query (replacing any ref there)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "ref"]
    query.append(("ref", code))
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass(frozen=True)
class CardsConfig:
    """Plain values the domain needs from the settings."""

    public_base_url: str
    share_secret: bytes
    tz_offset_hours: int
    plan: PlanConfig
    referral_policy: BindPolicy
    referral_window_days: int
    poster_font: str | None = None


class CardsService:
    """Everything behind /v1/cards, /c, /s, /r, /v1/referrals, /v1/orders and /v1/rewards."""

    def __init__(self, store: Store, *, config: CardsConfig, items: ItemSource,
                 posters: PosterCache, clock: Callable[[], float]) -> None:
        self.store = store
        self.config = config
        self.items = items
        self.posters = posters
        self.clock = clock
        self.base = config.public_base_url.rstrip("/")
        self.cards = Cards(store, clock=clock)
        self.shares = Shares(store, secret=config.share_secret,
                             tz_offset_hours=config.tz_offset_hours, clock=clock)
        self.ledger = PlanLedger(store, config=config.plan, policy=config.referral_policy,
                                 window_days=config.referral_window_days,
                                 resolve_code=self.shares.sharer_of, clock=clock)
        self.renderer = PageRenderer()

    # ------------------------------------------------------------------ cards

    def card_json(self, card: Card) -> dict[str, Any]:
        """Return the API form of a card, with its page and poster URLs."""
        return card.to_dict() | {"url": f"{self.base}/c/{card.id}",
                                 "poster_url": f"{self.base}/c/{card.id}/poster.png"}

    def create_card(self, fields: CardFields) -> Card:
        """Create a card."""
        return self.cards.create_card(fields)

    def update_card(self, card_id: str, patch: CardPatch) -> Card:
        """Change a card (its version goes up, so its poster is redrawn)."""
        return self.cards.update_card(card_id, patch)

    # ------------------------------------------------------------------ shares

    def share_url(self, share: Share) -> str:
        """Return the public URL of a share code."""
        return f"{self.base}/s/{share.code}"

    def create_share(self, card_id: str, *, sharer_id: str) -> Share:
        """Return the sharer's code for an existing card."""
        self.cards.get_card_or_raise(card_id)
        return self.shares.create(card_id=card_id, sharer_id=sharer_id)

    def own_share(self, card: Card) -> Share:
        """Return the card owner's own share (what /c/ links and the poster's QR use)."""
        return self.shares.create(card_id=card.id, sharer_id=card.staff_id)

    def resolve_share_or_raise(self, code: str) -> Share:
        """Return the share of a code or raise NotFoundError."""
        share = self.shares.resolve(code)
        if share is None:
            raise NotFoundError("unknown share code")
        return share

    # ------------------------------------------------------------------ pages

    def _recommend(self, card: Card, viewer_id: str | None, k: int) -> list[CardItem]:
        try:
            return self.items.recommend(viewer_id=viewer_id, provider_id=card.provider_id, k=k)
        except Exception:
            log.exception("recommendations for card %s failed", card.id)
            return []

    def render_page(self, card: Card, *, share: Share, viewer_id: str | None,
                    pass_u: str | None) -> str:
        """Return the card page; every item links through /r/{code}/{item_id}."""
        items = self._recommend(card, viewer_id, PAGE_ITEMS)
        suffix = f"?u={quote(pass_u, safe='')}" if pass_u else ""
        linked = [(i, f"/r/{share.code}/{quote(i.id, safe='')}{suffix}") for i in items]
        return self.renderer.card_page(
            card, items=linked, page_url=self.share_url(share),
            poster_url=f"{self.base}/c/{card.id}/poster.png", personal=viewer_id is not None,
        )

    def card_page(self, card_id: str, *, viewer_id: str | None, pass_u: str | None) -> str:
        """Return `GET /c/{card_id}`: links go through the owner's own share code."""
        card = self.cards.get_card_or_raise(card_id)
        return self.render_page(card, share=self.own_share(card), viewer_id=viewer_id,
                                pass_u=pass_u)

    def open_share(self, code: str, *, visitor_id: str, known_viewer: str | None,
                   pass_u: str | None) -> str:
        """Return `GET /s/{code}`: record the visit (once a day per visitor), show the card."""
        share = self.resolve_share_or_raise(code)
        card = self.cards.get_card_or_raise(share.card_id)
        self.shares.record_visit(share, visitor_id=visitor_id)
        return self.render_page(card, share=share, viewer_id=known_viewer, pass_u=pass_u)

    def click(self, code: str, item_id: str, *, visitor_id: str) -> str:
        """Record a tap and return where to send it: the item's mall URL with ref=<code>."""
        share = self.resolve_share_or_raise(code)
        item = self.items.get_item(item_id)
        # Only a catalog item's own http(s) URL: the request never names the target.
        if item is None or urlsplit(item.url).scheme not in ("http", "https"):
            raise NotFoundError(f"no item {item_id!r}")
        card = self.cards.get_card(share.card_id)
        self.shares.record_click(share, visitor_id=visitor_id, item_id=item_id)
        try:
            self.items.record_click(item_id=item_id, user_id=visitor_id,
                                    provider_id=card.provider_id if card else None)
        except Exception:
            log.exception("recording a click on %s failed", item_id)
        return with_ref(item.url, share.code)

    def visits(self, card_id: str) -> dict[str, Any]:
        """Return `GET /v1/cards/{card_id}/visits`: who opened, when, what they clicked."""
        self.cards.get_card_or_raise(card_id)
        rows = self.shares.list_visits(card_id)
        return {
            "card_id": card_id,
            "visitors": len({r["visitor_id"] for r in rows}),
            "opens": sum(1 for r in rows if r.get("first_ts") is not None),
            "clicks": sum(len(r.get("clicks", [])) for r in rows),
            "visits": [
                {"visitor_id": r["visitor_id"], "day": r["day"], "opened_ts": r.get("first_ts"),
                 "code": r.get("code"), "sharer_id": r.get("sharer_id"),
                 "clicks": [{"item_id": c["item_id"], "ts": c["ts"]} for c in r.get("clicks", [])]}
                for r in rows
            ],
        }

    # ------------------------------------------------------------------ poster

    def poster(self, card_id: str, *, code: str | None = None) -> bytes:
        """Return the card's poster PNG (QR of the share URL), cached until the card changes."""
        card = self.cards.get_card_or_raise(card_id)
        share = self.resolve_share_or_raise(code) if code else self.own_share(card)
        if share.card_id != card.id:
            raise NotFoundError("that share code is for another card")
        items = self._recommend(card, None, POSTER_ITEMS)
        digest = hashlib.sha256(
            "\n".join(f"{i.id}\t{i.title}\t{i.price_cents}" for i in items).encode()
        ).hexdigest()[:16]
        key = f"{card.id}:v{card.version}:{share.code}:{digest}"
        cached = self.posters.get(key)
        if cached is not None:
            return cached
        png = render_poster(card, items=items, share_url=self.share_url(share),
                            font_path=find_cjk_font(self.config.poster_font))
        self.posters.put(key, png)
        return png

    # ------------------------------------------------------------------ orders

    def record_purchase(self, user_id: str, item_ids: Sequence[str], *, first: bool) -> None:
        """Tell the recommender what the user bought (best effort; first: count popularity)."""
        try:
            self.items.record_purchase(user_id=user_id, item_ids=item_ids, first=first)
        except Exception:
            log.exception("recording a purchase of %s failed", user_id)

    # ------------------------------------------------------------------ erasure

    def erase_user(self, user_id: str) -> None:
        """Erase the user's visits, clicks and share codes and unlink its ledger pseudonym."""
        self.shares.erase_user(user_id)
        self.ledger.erase_user(user_id)
