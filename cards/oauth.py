"""WeChat sign-in on card pages (issue 15 point 2): silent `snsapi_base` OAuth for the openid.

A card opened inside WeChat is sent once through WeChat's authorize page, which comes back
to ``/oauth/wechat?next=/c/…&code=CODE&state=STATE`` (WECOM.md §4, wechatpy's
``WeChatOAuth``). The ``code`` is exchanged at ``sns/oauth2/access_token`` for the visitor's
openid, which then lives in the signed visitor cookie (cards/viewer.py).

Nothing in the returning URL is believed unless we made it:
- ``state`` is ``base64url(nonce|expiry|hash(next)).base64url(HMAC)`` under a key derived
  from the share secret with a label of its own: it expires in minutes, is bound to the page
  it came from (``next``), and is spent on first use (a store key), so a captured callback
  URL cannot be replayed, nor a state moved onto another page.
- a ``code`` is spent on first use too (WeChat's codes are single-use and live 5 minutes,
  WECOM.md §4; we refuse a second use before WeChat is asked).
- ``next`` is a card or share path only: no open redirect.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from models.b64 import decode as _unb64
from models.b64 import encode as _b64
from models.errors import ForbiddenError, UpstreamError
from store import Store

STATE_LABEL = b"mingpian/wechat-oauth-state/v1"
STATE_TTL_S = 300  # WeChat's code lives 5 minutes; the round trip takes seconds
CODE_SPENT_TTL_S = 600  # longer than a code lives: a spent code stays refused
_MAC_BYTES = 16
_MAX_STATE_LEN = 128  # WeChat passes state back only up to 128 bytes
_NEXT = re.compile(r"^/(c|s)/[A-Za-z0-9_.:-]{1,64}$")
_CODE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_OPENID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CALLBACK_PATH = "/oauth/wechat"
MICROMESSENGER = "micromessenger"


def in_wechat(user_agent: str) -> bool:
    """Return whether a User-Agent is WeChat's in-app browser (it says MicroMessenger)."""
    return MICROMESSENGER in user_agent.lower()


def valid_next(path: str) -> bool:
    """Return whether path is a card or share page (the only places sign-in returns to)."""
    return bool(_NEXT.match(path))


def _next_hash(next_path: str) -> str:
    return hashlib.sha256(next_path.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SignedIn:
    """A finished sign-in: who (openid, unionid when WeChat gave one) and where to go back."""

    openid: str
    unionid: str | None
    next_path: str


@dataclass(frozen=True)
class OAuthApp:
    """The Official Account's OAuth values (plain values from app/)."""

    app_id: str
    app_secret: str
    api_base: str  # https://api.weixin.qq.com (sns/oauth2/access_token)
    oauth_base: str  # https://open.weixin.qq.com (connect/oauth2/authorize)
    public_base_url: str  # how our callback URL is written


class WeChatSignIn:
    """Builds the authorize redirect and finishes the callback (signed, one-use state)."""

    def __init__(self, store: Store, http: httpx.Client, *, app: OAuthApp, secret: bytes,
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.http = http
        self.app = app
        self.clock = clock
        self._key = hmac.new(secret, STATE_LABEL, hashlib.sha256).digest()

    # ------------------------------------------------------------------ state

    def _mac(self, raw: bytes) -> bytes:
        return hmac.new(self._key, raw, hashlib.sha256).digest()[:_MAC_BYTES]

    def make_state(self, next_path: str) -> str:
        """Return a fresh signed state for a sign-in that returns to next_path."""
        nonce = secrets.token_urlsafe(9)
        raw = f"{nonce}|{int(self.clock()) + STATE_TTL_S}|{_next_hash(next_path)}".encode()
        return f"{_b64(raw)}.{_b64(self._mac(raw))}"

    def _open_state(self, state: str, next_path: str) -> str:
        """Return the state's nonce if we signed it for next_path and it is unexpired."""
        if not state or len(state) > _MAX_STATE_LEN or state.count(".") != 1:
            raise ForbiddenError("sign-in refused: malformed state")
        body, tag = state.split(".")
        try:
            raw, mac = _unb64(body), _unb64(tag)
        except (binascii.Error, ValueError) as e:
            raise ForbiddenError("sign-in refused: malformed state") from e
        if not hmac.compare_digest(self._mac(raw), mac):
            raise ForbiddenError("sign-in refused: state not signed by us")
        parts = raw.decode(errors="replace").split("|")
        if len(parts) != 3 or not parts[1].isdigit():  # noqa: PLR2004  nonce, expiry, hash
            raise ForbiddenError("sign-in refused: malformed state")
        nonce, expires, bound = parts
        if int(expires) <= self.clock():
            raise ForbiddenError("sign-in refused: state expired")
        if not hmac.compare_digest(bound, _next_hash(next_path)):
            raise ForbiddenError("sign-in refused: state belongs to another page")
        return nonce

    # ------------------------------------------------------------------ redirect

    def callback_url(self, next_path: str) -> str:
        """Return our callback URL for a sign-in that returns to next_path."""
        base = self.app.public_base_url.rstrip("/")
        return f"{base}{CALLBACK_PATH}?{urlencode({'next': next_path})}"

    def authorize_url(self, next_path: str) -> str:
        """Return WeChat's silent authorize URL for a visitor of next_path."""
        if not valid_next(next_path):
            raise ValueError("sign-in returns to card and share pages only")
        redirect = quote(self.callback_url(next_path), safe="")
        state = self.make_state(next_path)
        # The parameter order and the #wechat_redirect suffix are what WeChat expects
        # (wechatpy's WeChatOAuth.authorize_url).
        return (f"{self.app.oauth_base.rstrip('/')}/connect/oauth2/authorize?appid="
                f"{quote(self.app.app_id, safe='')}&redirect_uri={redirect}"
                f"&response_type=code&scope=snsapi_base&state={state}#wechat_redirect")

    # ------------------------------------------------------------------ callback

    def finish(self, *, next_path: str, code: str, state: str) -> SignedIn:
        """Check state and code (each usable once) and exchange the code for the openid.

        Raises ForbiddenError for a forged, expired, misplaced or replayed state or code,
        UpstreamError when WeChat cannot be asked."""
        if not valid_next(next_path):
            raise ForbiddenError("sign-in refused: not a card page")
        if not _CODE.match(code):
            raise ForbiddenError("sign-in refused: malformed code")
        nonce = self._open_state(state, next_path)
        if not self.store.first_seen(f"oauth.state:{nonce}", STATE_TTL_S + 60):
            raise ForbiddenError("sign-in refused: state already used")
        spent = hashlib.sha256(f"{self.app.app_id}\n{code}".encode()).hexdigest()[:40]
        if not self.store.first_seen(f"oauth.code:{spent}", CODE_SPENT_TTL_S):
            raise ForbiddenError("sign-in refused: code already used")
        body = self._exchange(code)
        openid = str(body.get("openid", ""))
        if not _OPENID.match(openid):
            raise UpstreamError("sns/oauth2/access_token: no usable openid in the answer")
        unionid = body.get("unionid")
        return SignedIn(openid=openid, unionid=str(unionid) if unionid else None,
                        next_path=next_path)

    def _exchange(self, code: str) -> dict[str, Any]:
        path = "/sns/oauth2/access_token"
        try:
            resp = self.http.get(self.app.api_base.rstrip("/") + path, params={
                "appid": self.app.app_id, "secret": self.app.app_secret, "code": code,
                "grant_type": "authorization_code"})
            body = resp.json()
        except (httpx.HTTPError, ValueError) as e:
            raise UpstreamError(f"{path}: {type(e).__name__}") from e
        if not isinstance(body, dict):
            raise UpstreamError(f"{path}: unexpected answer")
        errcode = int(body.get("errcode", 0) or 0)
        # 40029 invalid code, 40163 code been used: the visitor's code, not our fault.
        if errcode in (40029, 40163):
            raise ForbiddenError(f"sign-in refused by WeChat: {errcode}")
        if errcode:
            raise UpstreamError(f"{path}: {errcode} {body.get('errmsg', '')}",
                                details={"errcode": errcode})
        return body
