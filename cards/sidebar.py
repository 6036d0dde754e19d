"""The salesperson's sidebar (issue 15 point 4): the customer of the current WeCom chat.

Opened from WeCom's chat toolbar (聊天工具栏), the page learns which customer the chat is
with from the JS-SDK (``wx.agentConfig`` with our signature over the agent's jsapi ticket,
then ``wx.invoke('getCurExternalContact')``, WECOM.md §4). A page script's word is not proof,
so the server believes an external_userid only for a salesperson it knows (a signed session
made from WeCom's member OAuth, ``auth/getuserinfo``) who follows that contact in WeCom
(``externalcontact/get``; app/ checks it). In demo mode a signed test token names both.

It shows the customer's interests with how many messages showed each (never a message), what
they are recommended now and what they tapped on cards, their place in the referral plan,
and the items as tracked share links (``/r/{code}/{item}`` through the salesperson's own card,
so a tap lands on the radar and an order binds to them).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape

from cards.plan import ReferralView
from cards.render import price_text
from cards.repo import NS_CARD, Card
from cards.service import CardsService
from cards.share import NS_BYVISITOR, NS_VISIT
from models.b64 import decode as _unb64
from models.b64 import encode as _b64
from models.ids import ID_PATTERN
from nlp.profile import Profile

SESSION_LABEL = b"mingpian/sidebar-session/v1"
TEST_TOKEN_LABEL = b"mingpian/sidebar-test-token/v1"
STATE_LABEL = b"mingpian/sidebar-oauth-state/v1"
SESSION_TTL_S = 8 * 3600  # a working day; then WeCom's OAuth (silent) names the member again
_MAC_BYTES = 16
_MAX_SIGNED = 512
_ID = re.compile(ID_PATTERN)
INTERESTS_SHOWN = 8
ITEMS_SHOWN = 6
CLICKS_SHOWN = 10
_ROLE_TEXT = {"member": "会员", "agent": "代理", "boss": "老板"}


def jsapi_signature(*, ticket: str, nonce: str, timestamp: int | str, url: str) -> str:
    """Return the JS-SDK signature of a page URL (sha1 over the ticket, nonce, time, URL
    without its #fragment), as wx.agentConfig needs it (WECOM.md §4)."""
    page = url.split("#", 1)[0]
    text = f"jsapi_ticket={ticket}&noncestr={nonce}&timestamp={timestamp}&url={page}"
    return hashlib.sha1(text.encode()).hexdigest()


class SidebarKeys:
    """Signs the sidebar's session cookie, OAuth state and (demo) test tokens."""

    def __init__(self, secret: bytes, *, old_secrets: Sequence[bytes] = ()) -> None:
        secrets_ = [secret, *[s for s in old_secrets if s and s != secret]]
        self._keys = {label: [hmac.new(s, label, hashlib.sha256).digest() for s in secrets_]
                      for label in (SESSION_LABEL, TEST_TOKEN_LABEL, STATE_LABEL)}

    def sign(self, label: bytes, fields: Sequence[str]) -> str:
        """Return the fields signed under label's current key."""
        raw = "\n".join(fields).encode()
        mac = hmac.new(self._keys[label][0], raw, hashlib.sha256).digest()[:_MAC_BYTES]
        return f"{_b64(raw)}.{_b64(mac)}"

    def open(self, label: bytes, signed: str, *, now: float) -> list[str] | None:
        """Return the fields of a valid, unexpired value signed under label (the last field
        is its expiry), else None."""
        if not signed or len(signed) > _MAX_SIGNED or signed.count(".") != 1:
            return None
        body, tag = signed.split(".")
        try:
            raw, mac = _unb64(body), _unb64(tag)
            fields = raw.decode().split("\n")
        except (binascii.Error, ValueError):
            return None
        if not any(hmac.compare_digest(hmac.new(k, raw, hashlib.sha256).digest()[:_MAC_BYTES],
                                       mac) for k in self._keys[label]):
            return None
        if not fields or not fields[-1].isdigit() or int(fields[-1]) <= now:
            return None
        return fields[:-1]

    def session(self, userid: str, *, now: float) -> str:
        """Return the session value naming a salesperson (member userid)."""
        return self.sign(SESSION_LABEL, [userid, str(int(now) + SESSION_TTL_S)])

    def session_user(self, value: str, *, now: float) -> str | None:
        """Return the member a valid session names, else None."""
        got = self.open(SESSION_LABEL, value, now=now)
        return got[0] if got and len(got) == 1 and _ID.match(got[0]) else None

    def test_token(self, *, userid: str, external_userid: str, expires_at: int) -> str:
        """Return a demo-mode token naming a salesperson and the customer of the chat."""
        if not (_ID.match(userid) and _ID.match(external_userid)):
            raise ValueError("not a valid id")
        return self.sign(TEST_TOKEN_LABEL, [userid, external_userid, str(expires_at)])

    def read_test_token(self, token: str, *, now: float) -> tuple[str, str] | None:
        """Return (salesperson, customer) of a valid test token, else None."""
        got = self.open(TEST_TOKEN_LABEL, token, now=now)
        if not got or len(got) != 2 or not all(_ID.match(f) for f in got):  # noqa: PLR2004  two ids
            return None
        return got[0], got[1]


@dataclass(frozen=True, kw_only=True)  # weight and count are both numbers: name them
class Interest:
    """One interest of the customer: tag, decayed weight, messages that showed it."""

    tag: str
    weight: float
    count: int


@dataclass(frozen=True)
class Shareable:
    """An item with its tracked share link."""

    item_id: str
    title: str
    price: str
    kind: str
    url: str


@dataclass(frozen=True)
class Tapped:
    """An item the customer tapped on a card, and when (local day)."""

    title: str
    day: str


@dataclass(frozen=True)
class SidebarView:
    """Everything the sidebar shows about one customer."""

    external_userid: str
    person: str  # the canonical person (identity links), whose profile is shown
    message_count: int
    interests: list[Interest]
    recommended: list[Shareable]
    tapped: list[Tapped]
    referral: ReferralView
    card: Card | None  # the salesperson's card the links go through


class Sidebar:
    """Builds and renders the sidebar of one customer for one salesperson."""

    def __init__(self, cards: CardsService, *, profile: Callable[[str], Profile | None],
                 canonical: Callable[[str], str], secret: bytes,
                 old_secrets: Sequence[bytes] = ()) -> None:
        self.cards = cards
        self.profile = profile
        self.canonical = canonical
        self.keys = SidebarKeys(secret, old_secrets=old_secrets)
        self.env = Environment(loader=PackageLoader("cards", "templates"),
                               autoescape=select_autoescape(["html"], default=True),
                               trim_blocks=True, lstrip_blocks=True)

    def card_of(self, userid: str) -> Card | None:
        """Return the card of a salesperson (by WeCom userid, else staff id), newest first."""
        found: list[Card] = []
        for _, rec in self.cards.store.scan(NS_CARD):
            doc = rec.doc
            if doc.get("wecom_user_id") == userid or doc.get("staff_id") == userid:
                found.append(Card.from_doc(doc, rec.version))
        found.sort(key=lambda c: (c.wecom_user_id == userid, c.updated_at), reverse=True)
        return found[0] if found else None

    def _tapped(self, person: str) -> list[Tapped]:
        keys = [k for k, _ in self.cards.store.scan(NS_BYVISITOR, prefix=f"{person}|")]
        visits = self.cards.store.get_many(
            NS_VISIT, [f"{k.split('|', 2)[1]}|{k.split('|', 2)[2]}|{person}" for k in keys])
        clicks = sorted(((c["ts"], c["item_id"], r.doc["day"]) for r in visits.values()
                         for c in r.doc.get("clicks", [])), reverse=True)
        out: list[Tapped] = []
        for _, item_id, day in clicks[:CLICKS_SHOWN]:
            item = self.cards.items.get_item(item_id)
            out.append(Tapped(title=item.title if item else item_id, day=day))
        return out

    def view(self, external_userid: str, *, userid: str) -> SidebarView:
        """Return the sidebar of a customer, for the salesperson `userid`."""
        person = self.canonical(external_userid)
        profile = self.profile(person)
        interests = [Interest(tag=t.tag, weight=t.weight, count=profile.tag_counts.get(t.tag, 0))
                     for t in profile.tags[:INTERESTS_SHOWN]] if profile else []
        card = self.card_of(userid)
        recommended: list[Shareable] = []
        if card is not None:
            share = self.cards.own_share(card)
            base = self.cards.base
            for item in self.cards.items.recommend(viewer_id=person,
                                                   provider_id=card.provider_id,
                                                   k=ITEMS_SHOWN):
                recommended.append(Shareable(
                    item_id=item.id, title=item.title, price=price_text(item.price_cents),
                    kind=item.kind, url=f"{base}/r/{share.code}/{quote(item.id, safe='')}"))
        return SidebarView(
            external_userid=external_userid, person=person,
            message_count=profile.message_count if profile else 0, interests=interests,
            recommended=recommended, tapped=self._tapped(person),
            referral=self.cards.referral(person), card=card)

    def render(self, view: SidebarView, *, csp_nonce: str) -> str:
        """Return the sidebar page of one customer (no chat text: tags and counts only)."""
        r = view.referral
        top = max((i.weight for i in view.interests), default=1.0) or 1.0
        return self.env.get_template("sidebar.html").render(
            v=view, nonce=csp_nonce, role=_ROLE_TEXT.get(r.role, r.role),
            bars=[max(6, round(100 * i.weight / top)) for i in view.interests])

    def render_shell(self, *, csp_nonce: str, jssdk_url: str, config: dict[str, str],
                     customer_path: str) -> str:
        """Return the page that asks the JS-SDK for the chat's customer, then opens theirs."""
        return self.env.get_template("sidebar_shell.html").render(
            nonce=csp_nonce, jssdk_url=jssdk_url, config=config, customer_path=customer_path)
