"""Who is looking at a card page: signed viewer tokens and signed visitor cookies (§6).

Card ids are public, so a page must never believe a member id that arrives in the URL or
in a hand-made cookie: that would print the member's chat-derived interests to anyone and
write visits under their name into the salesperson's radar. The mall, which knows who is
signed in, asks `POST /v1/viewer-tokens` for a short-lived token; the page turns it into a
visitor cookie. Both are ``base64url(payload).base64url(HMAC)``, with keys derived from the
share secret under distinct labels, so a token is never accepted as a cookie (nor the other
way round) and rotating the share secret (old secrets still verify) rotates them too.

An anonymous visitor is ``v:`` plus a keyed hash of client address and user agent: the same
browser without cookies is one visitor, not one per request (radar and popularity pumping),
and the address itself is never stored.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

from models.b64 import decode as _unb64
from models.b64 import encode as _b64
from models.ids import ID_PATTERN

TOKEN_LABEL = b"mingpian/viewer-token/v1"
COOKIE_LABEL = b"mingpian/visitor-cookie/v1"
VISITOR_LABEL = b"mingpian/anonymous-visitor/v1"
ANONYMOUS_PREFIX = "v:"
ANONYMOUS_COOKIE_TTL_S = 365 * 86_400
_MAC_BYTES = 16  # 128-bit tags: unforgeable, and short enough for a URL and a cookie
_MAX_SIGNED_LEN = 512  # nothing we sign is longer; refuse before decoding anything bigger
_ID = re.compile(ID_PATTERN)
_KNOWN = "k"
_FIELDS = 3  # kind, visitor id, expiry
_ANON = "a"
_WECHAT = "w"  # signed in with WeChat (cards/oauth.py): the id is the visitor's openid
WECHAT_COOKIE_TTL_S = 30 * 86_400


@dataclass(frozen=True)
class Visitor:
    """A page visitor: a member the mall vouched for (known) or an anonymous browser."""

    id: str
    known: bool
    expires_at: int
    openid: str | None = None  # set when WeChat sign-in named the visitor (issue 15 point 2)


def _derive(secret: bytes, label: bytes) -> bytes:
    return hmac.new(secret, label, hashlib.sha256).digest()


class ViewerKeys:
    """Signs and verifies viewer tokens and visitor cookies (current and old secrets)."""

    def __init__(self, secret: bytes, *, old_secrets: Sequence[bytes] = ()) -> None:
        secrets_ = [secret, *[s for s in old_secrets if s and s != secret]]
        self._token_keys = [_derive(s, TOKEN_LABEL) for s in secrets_]
        self._cookie_keys = [_derive(s, COOKIE_LABEL) for s in secrets_]
        # The anonymous id uses the current secret only: after a rotation a cookie-less
        # visitor becomes a new visitor once, which is harmless.
        self._visitor_key = _derive(secret, VISITOR_LABEL)

    # ------------------------------------------------------------------ signing

    @staticmethod
    def _sign(key: bytes, payload: str) -> str:
        raw = payload.encode()
        mac = hmac.new(key, raw, hashlib.sha256).digest()[:_MAC_BYTES]
        return f"{_b64(raw)}.{_b64(mac)}"

    @staticmethod
    def _open(keys: Sequence[bytes], signed: str) -> list[str] | None:
        """Return the payload's fields if any key signed it, else None."""
        if not signed or len(signed) > _MAX_SIGNED_LEN or signed.count(".") != 1:
            return None
        body, tag = signed.split(".")
        try:
            raw, mac = _unb64(body), _unb64(tag)
        except (binascii.Error, ValueError):
            return None
        if not any(hmac.compare_digest(hmac.new(k, raw, hashlib.sha256).digest()[:_MAC_BYTES],
                                       mac) for k in keys):
            return None
        try:
            return raw.decode().split("\n")
        except UnicodeDecodeError:
            return None

    @staticmethod
    def _fields(parts: list[str] | None, *, now: float) -> tuple[str, str, int] | None:
        if parts is None or len(parts) != _FIELDS or not _ID.match(parts[1]):
            return None
        try:
            expires_at = int(parts[2])
        except ValueError:
            return None
        if expires_at <= now:
            return None
        return parts[0], parts[1], expires_at

    # ------------------------------------------------------------------ tokens

    def issue_token(self, user_id: str, *, expires_at: int) -> str:
        """Return a viewer token naming user_id until expires_at (Unix seconds)."""
        if not _ID.match(user_id):
            raise ValueError("not a valid user id")
        return self._sign(self._token_keys[0], f"{_KNOWN}\n{user_id}\n{expires_at}")

    def read_token(self, token: str, *, now: float) -> Visitor | None:
        """Return the member a valid, unexpired token names, else None (anonymous)."""
        got = self._fields(self._open(self._token_keys, token), now=now)
        if got is None or got[0] != _KNOWN:
            return None
        return Visitor(got[1], known=True, expires_at=got[2])

    # ------------------------------------------------------------------ cookies

    def cookie_value(self, visitor: Visitor) -> str:
        """Return the signed cookie value that stands for visitor until it expires."""
        kind = _WECHAT if visitor.openid else _KNOWN if visitor.known else _ANON
        return self._sign(self._cookie_keys[0], f"{kind}\n{visitor.id}\n{visitor.expires_at}")

    def read_cookie(self, value: str, *, now: float) -> Visitor | None:
        """Return the visitor a valid cookie stands for; None for a forged or stale one."""
        got = self._fields(self._open(self._cookie_keys, value), now=now)
        if got is None or got[0] not in (_KNOWN, _ANON, _WECHAT):
            return None
        kind, visitor_id, expires_at = got
        if kind == _ANON and not visitor_id.startswith(ANONYMOUS_PREFIX):
            return None
        if kind == _WECHAT:
            return Visitor(visitor_id, known=True, expires_at=expires_at, openid=visitor_id)
        return Visitor(visitor_id, known=kind == _KNOWN, expires_at=expires_at)

    # ------------------------------------------------------------------ anonymous

    def anonymous(self, *, client: str, user_agent: str, now: float) -> Visitor:
        """Return the anonymous visitor of a client address and user agent (a keyed hash)."""
        mac = hmac.new(self._visitor_key, f"{client}\n{user_agent}".encode(), hashlib.sha256)
        return Visitor(ANONYMOUS_PREFIX + mac.hexdigest()[:20], known=False,
                       expires_at=int(now) + ANONYMOUS_COOKIE_TTL_S)
