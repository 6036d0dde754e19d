"""The cards domain as one object: cards, shares, pages, posters, and the plan ledger.

Built once per process by app/ from plain values (STYLE §2: only app/ reads settings).

Public pages are cheap to request and must stay cheap to serve: the cold-start ("popular")
items are refreshed on a timer rather than per request, and a poster is keyed on the card's
own version and share code only, so moving popularity never forces a re-render; renders
are bounded by a semaphore and superseded posters are deleted.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from cards.contact_way import ContactWays, MakeContactWay
from cards.items import CardItem, ItemSource
from cards.ledger import DEMO_LEDGER_KEY
from cards.order_feedback import OrderFeedback
from cards.orders import PlanLedger, Submitted
from cards.plan import BindPolicy, OrderEvent, PlanConfig, ReferralView, RewardsView
from cards.render import PageRenderer, find_cjk_font, render_poster
from cards.repo import Card, CardFields, CardPatch, Cards
from cards.share import Share, Shares, local_day
from cards.viewer import ViewerKeys, Visitor
from models.errors import NotFoundError, RateLimitedError
from nlp.feedback import OrderSignal
from store import Store

log = logging.getLogger("mingpian.cards")

PAGE_ITEMS = 6
POSTER_ITEMS = 3
POSTER_TTL_S = 7 * 86_400
POSTER_MAX_FILES = 2000  # posters kept on disk; the least recently written go first
POSTER_RENDERS = 2  # posters drawn at once per process (each takes a core for ~100 ms)
POSTER_RENDER_WAIT_S = 10.0  # a request waits this long for a render slot, then gets 429
POPULAR_REFRESH_S = 300.0  # cold-start items are recomputed at most this often
EMPTY_POPULAR_RETRY_S = 5.0
CLICK_DEDUP_TTL_S = 2 * 86_400  # a visitor's tap raises an item's popularity once a day


class PosterCache(Protocol):
    """Where rendered posters are kept until their card changes."""

    def get(self, card_id: str, *, code: str, version: int) -> bytes | None:
        """Return the cached PNG of this card version and share code, or None."""

    def put(self, card_id: str, *, code: str, version: int, png: bytes) -> None:
        """Keep a PNG (and drop the ones of earlier versions of the same card and code)."""


class FilePosterCache:
    """Posters as files under the data directory (embedded mode).

    One file per card and share code, named with the card version: writing a new version
    deletes the older ones, and the directory never holds more than max_files posters."""

    def __init__(self, directory: Path, *, max_files: int = POSTER_MAX_FILES) -> None:
        self.directory = directory
        self.max_files = max_files

    @staticmethod
    def _stem(card_id: str, code: str) -> str:
        return hashlib.sha256(f"{card_id}|{code}".encode()).hexdigest()[:32]

    def _path(self, card_id: str, code: str, version: int) -> Path:
        return self.directory / f"{self._stem(card_id, code)}-v{version}.png"

    def get(self, card_id: str, *, code: str, version: int) -> bytes | None:
        """Return the cached PNG, or None."""
        path = self._path(card_id, code, version)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def put(self, card_id: str, *, code: str, version: int, png: bytes) -> None:
        """Write the PNG atomically (a reader never sees half a file); evict old ones."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(card_id, code, version)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(png)
        os.replace(tmp, path)
        for old in self.directory.glob(f"{self._stem(card_id, code)}-v*.png"):
            if old != path:
                old.unlink(missing_ok=True)
        self._trim()

    def _trim(self) -> None:
        files = list(self.directory.glob("*.png"))
        if len(files) <= self.max_files:
            return
        def mtime(p: Path) -> float:
            try:
                return p.stat().st_mtime
            except FileNotFoundError:
                return 0.0
        files.sort(key=mtime)
        for old in files[: len(files) - self.max_files]:
            old.unlink(missing_ok=True)

    def count(self) -> int:
        """Return how many posters are on disk."""
        return sum(1 for _ in self.directory.glob("*.png")) if self.directory.is_dir() else 0


class StorePosterCache:
    """Posters in the store with a TTL (scale-out mode: every machine shares them).

    One record per card and share code: a new version overwrites the old one."""

    NS = "poster.png"

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, card_id: str, *, code: str, version: int) -> bytes | None:
        """Return the cached PNG, or None."""
        rec = self.store.get(self.NS, f"{card_id}|{code}")
        if rec is None or rec.doc.get("version") != version:
            return None
        return base64.b64decode(rec.doc["png"])

    def put(self, card_id: str, *, code: str, version: int, png: bytes) -> None:
        """Keep the PNG for a week."""
        self.store.put(self.NS, f"{card_id}|{code}",
                       {"version": version, "png": base64.b64encode(png).decode()},
                       ttl_s=POSTER_TTL_S)

    def count(self) -> int:
        """Return how many posters are kept."""
        return self.store.count(self.NS)


class PosterBusyError(RateLimitedError):
    """Every poster render slot stayed busy: try again shortly."""

    code = "busy"


def with_ref(url: str, code: str) -> str:
    """Return url with `ref=<code>` set in its query (replacing any ref there)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "ref"]
    query.append(("ref", code))
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass(frozen=True)
class VisitorCookie:
    """What to set as a visitor's signed cookie: its value, lifetime and Secure flag."""

    value: str
    max_age: int
    secure: bool


@dataclass(frozen=True)
class OrderResult:
    """How an order event fared (refusals are raised, never returned)."""

    refund_cents: int
    duplicate: bool  # the same (order_id, status, refund_cents) came before: nothing changed
    applied: bool


@dataclass(frozen=True)
class BindResult:
    """How a binding fared: the user's referrer now, the policy in force, whether applied."""

    referrer: str | None
    policy: BindPolicy
    applied: bool


def _raise_refusal(sub: Submitted) -> None:
    # A refused event carries the typed error that refused it (409, its precise code).
    if sub.outcome is not None:
        sub.outcome.raise_if_refused()


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
    old_share_secrets: tuple[bytes, ...] = ()
    visit_retention_days: int = 180
    viewer_token_max_ttl_s: int = 7 * 86_400
    popular_refresh_s: float = POPULAR_REFRESH_S
    poster_renders: int = POSTER_RENDERS
    ledger_key: bytes = DEMO_LEDGER_KEY  # HMAC key of the ledger head (MINGPIAN_LEDGER_KEY)


class CardsService:
    """Everything behind /v1/cards, /c, /s, /r, /v1/referrals, /v1/orders and /v1/rewards."""

    def __init__(self, store: Store, *, config: CardsConfig, items: ItemSource,
                 posters: PosterCache, clock: Callable[[], float],
                 make_contact_way: MakeContactWay | None = None,
                 learn_order: Callable[[OrderSignal], None] | None = None) -> None:
        self.store = store
        self.config = config
        self.items = items
        self.posters = posters
        self.clock = clock
        self.base = config.public_base_url.rstrip("/")
        self.cards = Cards(store, clock=clock)
        self.shares = Shares(store, secret=config.share_secret,
                             tz_offset_hours=config.tz_offset_hours, clock=clock,
                             old_secrets=config.old_share_secrets)
        self.viewers = ViewerKeys(config.share_secret, old_secrets=config.old_share_secrets)
        self.ledger = PlanLedger(store, config=config.plan, policy=config.referral_policy,
                                 window_days=config.referral_window_days,
                                 resolve_code=self.shares.sharer_of, clock=clock,
                                 ledger_key=config.ledger_key)
        self.renderer = PageRenderer()
        # The 联系我 QR code under "加企业微信" (issue 15 point 6); none without WeCom.
        self.contact_ways = ContactWays(store, make=make_contact_way)
        # Orders back to the recommender from the plan's event log (issue 15 point 7): also
        # those a crashed process accepted and a later catch-up applied. None: the old way.
        self.order_feedback = None if learn_order is None else OrderFeedback(
            store, learn=learn_order, provider_of=self._provider_of)
        self._popular: dict[str | None, tuple[float, list[CardItem]]] = {}
        self._popular_lock = threading.Lock()
        self._popular_refreshing: set[str | None] = set()
        self._renders = threading.BoundedSemaphore(max(1, config.poster_renders))

    # ------------------------------------------------------------------ cards

    def card_json(self, card: Card) -> dict[str, Any]:
        """Return the API form of a card, with its page and poster URLs."""
        return card.to_dict() | {"url": f"{self.base}/c/{card.id}",
                                 "poster_url": f"{self.base}/c/{card.id}/poster.png"}

    def get_card_json(self, card_id: str) -> dict[str, Any]:
        """Return the API form of an existing card, or raise NotFoundError."""
        return self.card_json(self.cards.get_card_or_raise(card_id))

    def require_card(self, card_id: str) -> None:
        """Raise NotFoundError unless the card exists."""
        self.cards.get_card_or_raise(card_id)

    def create_card(self, fields: CardFields) -> Card:
        """Create a card (and, best effort, its 联系我 QR code)."""
        card = self.cards.create_card(fields)
        self.contact_ways.ensure(card)
        return card

    def update_card(self, card_id: str, patch: CardPatch) -> Card:
        """Change a card (its version goes up, so its poster is redrawn)."""
        card = self.cards.update_card(card_id, patch)
        self.contact_ways.ensure(card)
        return card

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

    # ------------------------------------------------------------------ viewers

    def issue_viewer_token(self, user_id: str, *, ttl_s: int) -> tuple[str, int]:
        """Return a viewer token for user_id and its expiry (ttl_s capped by the config)."""
        ttl = max(1, min(ttl_s, self.config.viewer_token_max_ttl_s))
        expires_at = int(self.clock()) + ttl
        return self.viewers.issue_token(user_id, expires_at=expires_at), expires_at

    def visitor_from_token(self, token: str) -> Visitor | None:
        """Return the member a valid viewer token names, else None (anonymous)."""
        return self.viewers.read_token(token, now=self.clock())

    def visitor_from_cookie(self, value: str) -> Visitor | None:
        """Return the visitor a signed cookie stands for, else None."""
        return self.viewers.read_cookie(value, now=self.clock())

    def anonymous_visitor(self, *, client: str, user_agent: str) -> Visitor:
        """Return the anonymous visitor of a client (the same one on every request)."""
        return self.viewers.anonymous(client=client, user_agent=user_agent, now=self.clock())

    def visitor_cookie(self, visitor: Visitor) -> VisitorCookie:
        """Return the signed cookie that stands for a visitor, until the visitor expires.

        Secure when the public base URL (MINGPIAN_PUBLIC_BASE_URL) is https."""
        return VisitorCookie(value=self.viewers.cookie_value(visitor),
                             max_age=max(1, visitor.expires_at - int(self.clock())),
                             secure=self.base.lower().startswith("https://"))

    # ------------------------------------------------------------------ pages

    def _recommend(self, card: Card, viewer_id: str | None, k: int) -> list[CardItem]:
        if viewer_id is None:
            return self.popular_items(card.provider_id)[:k]
        try:
            return self.items.recommend(viewer_id=viewer_id, provider_id=card.provider_id, k=k)
        except Exception:
            log.exception("recommendations for card %s failed", card.id)
            return []

    def popular_items(self, provider_id: str | None) -> list[CardItem]:
        """Return the provider's cold-start items, recomputed at most every refresh period.

        Every anonymous page view and poster reads this list, so the recommender is asked on
        a timer, not once per request."""
        now = self.clock()
        with self._popular_lock:
            hit = self._popular.get(provider_id)
            # An empty list (a catalog still being indexed) is retried soon, not kept for
            # the whole period.
            if hit is not None and now - hit[0] < (self.config.popular_refresh_s if hit[1]
                                                   else EMPTY_POPULAR_RETRY_S):
                return hit[1]
            if hit is not None and provider_id in self._popular_refreshing:
                return hit[1]  # another request is refreshing it: the stale list meanwhile
            self._popular_refreshing.add(provider_id)
        # The recommender is asked outside the lock: pages of other providers (and of this
        # one, while a stale list exists) never wait behind it.
        items = hit[1] if hit is not None else []
        try:
            items = self.items.recommend(viewer_id=None, provider_id=provider_id,
                                         k=max(PAGE_ITEMS, POSTER_ITEMS))
        except Exception:
            log.exception("popular items of provider %s failed", provider_id)
        finally:
            with self._popular_lock:
                self._popular[provider_id] = (now, items)
                self._popular_refreshing.discard(provider_id)
        return items

    def render_page(self, card: Card, *, share: Share, viewer_id: str | None,
                    csp_nonce: str) -> str:
        """Return the card page; every item links through /r/{code}/{item_id}."""
        items = self._recommend(card, viewer_id, PAGE_ITEMS)
        linked = [(i, f"/r/{share.code}/{quote(i.id, safe='')}") for i in items]
        return self.renderer.card_page(
            card, items=linked, page_url=self.share_url(share),
            poster_url=f"{self.base}/c/{card.id}/poster.png", personal=viewer_id is not None,
            csp_nonce=csp_nonce, contact_qr=self.contact_ways.ensure(card),
        )

    def card_page(self, card_id: str, *, viewer_id: str | None, csp_nonce: str) -> str:
        """Return `GET /c/{card_id}`: links go through the owner's own share code."""
        card = self.cards.get_card_or_raise(card_id)
        return self.render_page(card, share=self.own_share(card), viewer_id=viewer_id,
                                csp_nonce=csp_nonce)

    def open_share(self, code: str, *, visitor: Visitor, csp_nonce: str) -> str:
        """Return `GET /s/{code}`: record the visit (once a day per visitor), show the card."""
        share = self.resolve_share_or_raise(code)
        card = self.cards.get_card_or_raise(share.card_id)
        self.shares.record_visit(share, visitor_id=visitor.id)
        return self.render_page(card, share=share,
                                viewer_id=visitor.id if visitor.known else None,
                                csp_nonce=csp_nonce)

    def click(self, code: str, item_id: str, *, visitor_id: str) -> str:
        """Record a tap and return where to send it: the item's mall URL with ref=<code>."""
        share = self.resolve_share_or_raise(code)
        item = self.items.get_item(item_id)
        # Only a catalog item's own http(s) URL: the request never names the target.
        if item is None or urlsplit(item.url).scheme not in ("http", "https"):
            raise NotFoundError(f"no item {item_id!r}")
        card = self.cards.get_card(share.card_id)
        self.shares.record_click(share, visitor_id=visitor_id, item_id=item_id)
        # Popularity feeds every cold-start visitor's page: one visitor raises an item once a
        # day, however often it taps (the key is hashed: no visitor id is kept here).
        day = local_day(self.clock(), tz_offset_hours=self.config.tz_offset_hours)
        marker = hashlib.sha256(f"{item_id}\n{visitor_id}\n{day}".encode()).hexdigest()[:32]
        if self.store.first_seen(f"cards.click:{marker}", CLICK_DEDUP_TTL_S):
            try:
                self.items.record_click(item_id=item_id, user_id=visitor_id,
                                        provider_id=card.provider_id if card else None)
            except Exception:
                log.exception("recording a click on %s failed", item_id)
        return with_ref(item.url, share.code)

    def visits(self, card_id: str, *, limit: int = 100, cursor: str | None = None
               ) -> dict[str, Any]:
        """Return `GET /v1/cards/{card_id}/visits`: who opened, when, what they clicked.

        Totals cover every visit kept; `visits` is one page, latest first."""
        self.cards.get_card_or_raise(card_id)
        page = self.shares.page_visits(card_id, limit=limit, cursor=cursor,
                                       retention_days=self.config.visit_retention_days)
        return {
            "card_id": card_id,
            "visitors": page.visitors,
            "opens": page.opens,
            "clicks": page.clicks,
            "visits": [
                {"visitor_id": r["visitor_id"], "day": r["day"], "opened_ts": r.get("first_ts"),
                 "code": r.get("code"), "sharer_id": r.get("sharer_id"),
                 "clicks": [{"item_id": c["item_id"], "ts": c["ts"]} for c in r.get("clicks", [])]}
                for r in page.rows
            ],
            "next_cursor": page.next_cursor,
        }

    def purge_visits(self) -> int:
        """Delete visits older than the retention; return how many (the lead schedules it)."""
        return self.shares.purge_visits(retention_days=self.config.visit_retention_days)

    # ------------------------------------------------------------------ poster

    def poster(self, card_id: str, *, code: str | None = None) -> bytes:
        """Return the card's poster PNG (QR of the share URL), cached until the card changes.

        The key is the card's version and the share code only: the items drawn are the
        popular ones at render time, and a change in popularity does not redraw it."""
        card = self.cards.get_card_or_raise(card_id)
        share = self.resolve_share_or_raise(code) if code else self.own_share(card)
        if share.card_id != card.id:
            raise NotFoundError("that share code is for another card")
        cached = self.posters.get(card.id, code=share.code, version=card.version)
        if cached is not None:
            return cached
        font_path = find_cjk_font(self.config.poster_font)  # cached, found or not
        if not self._renders.acquire(timeout=POSTER_RENDER_WAIT_S):
            raise PosterBusyError("posters are being drawn; try again shortly",
                                  retry_after_s=5)
        try:
            # Another request may have drawn it while this one waited for a slot.
            cached = self.posters.get(card.id, code=share.code, version=card.version)
            if cached is not None:
                return cached
            png = render_poster(card, items=self._recommend(card, None, POSTER_ITEMS),
                                share_url=self.share_url(share), font_path=font_path)
            self.posters.put(card.id, code=share.code, version=card.version, png=png)
            return png
        finally:
            self._renders.release()

    # ------------------------------------------------------------------ orders

    def submit_order(self, event: OrderEvent, *, ref_code: str | None) -> OrderResult:
        """Accept an order event (idempotent per order_id, status, refund_cents), apply it now.

        A refusal raises its typed error. A completed event, applied or a duplicate (the
        mall's retry after a crash), tells the recommender again: "bought" is a set, and
        popularity counts only the first delivery."""
        sub = self.ledger.submit_order(event, ref_code=ref_code)
        self.feed_back()
        _raise_refusal(sub)
        applied = sub.duplicate or sub.outcome is not None
        if self.order_feedback is None and event.status == "completed" and applied:
            self.record_purchase(event.user_id, [i.item_id for i in event.items],
                                 first=not sub.duplicate)
        return OrderResult(refund_cents=event.refund_cents, duplicate=sub.duplicate,
                           applied=applied)

    def bind(self, user_id: str, *, code: str) -> BindResult:
        """Bind a newly registered user to the sharer of a code; a refusal raises."""
        sub = self.ledger.submit_bind(user_id, code=code)
        _raise_refusal(sub)
        view = self.ledger.referrals(user_id)
        return BindResult(referrer=view.referrer, policy=self.ledger.policy,
                          applied=sub.outcome is not None)

    def _fresh(self) -> None:
        # A backlog left by a crashed process is applied before anyone reads the plan.
        if self.ledger.pending() > 0:
            self.ledger.catch_up()
        self.feed_back()

    def feed_back(self) -> int:
        """Feed every logged order event not fed back yet to the recommender (best effort:
        what fails now is fed back by the next call); return how many events."""
        if self.order_feedback is None:
            return 0
        try:
            return self.order_feedback.run()
        except Exception:
            log.exception("feeding orders back to the recommender failed; retried later")
            return 0

    def _provider_of(self, code: str) -> str | None:
        """Return the provider of the card a share code is for, or None."""
        share = self.shares.resolve(code)
        card = self.cards.get_card(share.card_id) if share is not None else None
        return card.provider_id if card is not None else None

    def rewards(self, user_id: str) -> RewardsView:
        """Return the user's ledger entries and balances (any backlog applied first)."""
        self._fresh()
        return self.ledger.rewards(user_id)

    def referral(self, user_id: str) -> ReferralView:
        """Return the user's place in the referral tree (any backlog applied first)."""
        self._fresh()
        return self.ledger.referrals(user_id)

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
