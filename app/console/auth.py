"""Console accounts, sessions, CSRF tokens and the login throttle (issue 18).

Accounts live in the store (``console.user``), so every `serve` process sees one list and a
disabled account is signed out everywhere on its next request. Passwords are hashed with
argon2id (argon2-cffi). A session is a signed cookie — ``HttpOnly``, ``SameSite=Lax``,
expiring — naming the account and a random session id; the role is read from the store on
every request, never trusted from the cookie. Every form carries a CSRF token: an HMAC of
the session id (or, on the login page, of a pre-session cookie), checked on every POST.

Guessing is throttled twice: ten wrong passwords in a row lock the name for a while (also
against the right password), and each client has a budget of attempts per minute.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from limits import RateLimitItem, parse
from limits.storage import Storage
from limits.strategies import MovingWindowRateLimiter

from models.b64 import decode as _unb64
from models.b64 import encode as _b64
from models.errors import BadRequestError, NotFoundError, RateLimitedError
from store.base import Store

Role = Literal["admin", "operator"]
ROLES: tuple[Role, ...] = ("admin", "operator")
NS_USER = "console.user"
NS_FAILS = "console.login_fail"  # sha256(name) → {"n": wrong in a row, "until": locked until}
SESSION_COOKIE = "mp_console"
PRE_COOKIE = "mp_console_pre"  # the login form's CSRF anchor, before there is a session
MAX_WRONG = 10  # wrong passwords in a row before the name is locked
LOCK_S = 15 * 60
_NAME = re.compile(r"^[\w.@-]{1,64}$")
_MIN_PASSWORD = 8


@dataclass(frozen=True)
class ConsoleUser:
    """A console account as stored (without its hash)."""

    name: str
    role: Role
    disabled: bool

    @property
    def is_admin(self) -> bool:
        """Return whether this account may change settings."""
        return self.role == "admin"


@dataclass(frozen=True)
class Session:
    """A verified session cookie: who, which session, until when."""

    name: str
    sid: str
    expires_at: int


class LoginRefusedError(RateLimitedError):
    """Too many wrong passwords for a name, or too many attempts from a client."""

    code = "login_throttled"


def check_name(name: str) -> str:
    """Return the account name, or raise BadRequestError for one we do not accept."""
    if not _NAME.match(name):
        raise BadRequestError("account names are 1-64 letters, digits or . _ @ -")
    return name


def _fails_key(name: str) -> str:
    return hashlib.sha256(f"console-login\x1f{name}".encode()).hexdigest()[:40]


class ConsoleUsers:
    """The console's accounts in the store."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time,
                 hasher: PasswordHasher | None = None) -> None:
        self.store = store
        self.clock = clock
        self.hasher = hasher or PasswordHasher()
        self._dummy: str | None = None

    def _dummy_hash(self) -> str:
        # Verified against when the name is unknown: the answer takes as long either way.
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_hex(16))
        return self._dummy

    def add(self, name: str, *, role: Role, password: str) -> ConsoleUser:
        """Create or replace an account (a new password enables it again); return it."""
        check_name(name)
        if role not in ROLES:
            raise BadRequestError(f"role must be one of {', '.join(ROLES)}")
        if len(password) < _MIN_PASSWORD:
            raise BadRequestError(f"passwords have at least {_MIN_PASSWORD} characters")
        self.store.put(NS_USER, name, {"name": name, "role": role, "disabled": False,
                                       "hash": self.hasher.hash(password),
                                       "created_at": int(self.clock())})
        self.store.delete(NS_FAILS, _fails_key(name))
        return ConsoleUser(name=name, role=role, disabled=False)

    def disable(self, name: str) -> ConsoleUser:
        """Disable an account: it can no longer sign in and its sessions end."""
        rec = self.store.get(NS_USER, name)
        if rec is None:
            raise NotFoundError(f"no console account {name!r}")
        self.store.put(NS_USER, name, {**rec.doc, "disabled": True})
        return ConsoleUser(name=name, role=rec.doc["role"], disabled=True)

    def get(self, name: str) -> ConsoleUser | None:
        """Return the account, or None."""
        rec = self.store.get(NS_USER, name)
        if rec is None:
            return None
        return ConsoleUser(name=name, role=rec.doc["role"], disabled=bool(rec.doc["disabled"]))

    def list(self) -> list[ConsoleUser]:
        """Return every account, by name."""
        return [ConsoleUser(name=k, role=r.doc["role"], disabled=bool(r.doc["disabled"]))
                for k, r in self.store.scan(NS_USER)]

    def authenticate(self, name: str, password: str) -> ConsoleUser | None:
        """Return the account if the password is right and the name not locked; None if wrong.

        Raises LoginRefusedError while the name is locked (after MAX_WRONG wrong passwords
        in a row), whatever the password."""
        now = self.clock()
        fails = self.store.get(NS_FAILS, _fails_key(name))
        if fails is not None and float(fails.doc.get("until", 0)) > now:
            raise LoginRefusedError(
                "too many wrong passwords for this account: try again later",
                retry_after_s=math.ceil(float(fails.doc["until"]) - now))
        rec = self.store.get(NS_USER, name) if _NAME.match(name) else None
        ok = self._verify(rec.doc["hash"] if rec else self._dummy_hash(), password)
        if ok and rec is not None and not rec.doc["disabled"]:
            if fails is not None:
                self.store.delete(NS_FAILS, _fails_key(name))
            if self.hasher.check_needs_rehash(rec.doc["hash"]):
                self.store.put(NS_USER, name, {**rec.doc, "hash": self.hasher.hash(password)})
            return ConsoleUser(name=name, role=rec.doc["role"], disabled=False)
        n = int(fails.doc.get("n", 0)) + 1 if fails is not None else 1
        until = now + LOCK_S if n >= MAX_WRONG else 0
        self.store.put(NS_FAILS, _fails_key(name), {"n": n, "until": until},
                       ttl_s=LOCK_S * 2)
        return None

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return self.hasher.verify(hashed, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


class ClientThrottle:
    """Login attempts per client (moving window; in Redis when the store is)."""

    def __init__(self, *, limit: str, storage: Storage) -> None:
        self.item: RateLimitItem = parse(limit)
        self.limiter = MovingWindowRateLimiter(storage)

    def check(self, client: str) -> None:
        """Count one attempt of client; raise LoginRefusedError beyond the limit."""
        if self.limiter.hit(self.item, "console-login", client):
            return
        stats = self.limiter.get_window_stats(self.item, "console-login", client)
        raise LoginRefusedError("too many sign-in attempts from your address: wait a minute",
                                retry_after_s=max(1, math.ceil(stats.reset_time - time.time())))


class SessionSigner:
    """Signs and checks session cookies and CSRF tokens with one key."""

    def __init__(self, key: bytes, *, ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self.ttl_s = ttl_s
        self.clock = clock

    def _mac(self, purpose: str, text: str) -> str:
        return _b64(hmac.new(self.key, f"{purpose}\x1f{text}".encode(),
                             hashlib.sha256).digest())

    def issue(self, name: str) -> tuple[str, Session]:
        """Return a new session's cookie value and the session."""
        session = Session(name=name, sid=secrets.token_urlsafe(18),
                          expires_at=int(self.clock()) + self.ttl_s)
        body = _b64(json.dumps({"u": session.name, "s": session.sid, "e": session.expires_at},
                               separators=(",", ":")).encode())
        return f"{body}.{self._mac('session', body)}", session

    def read(self, value: str | None) -> Session | None:
        """Return the session a cookie value carries, None if unsigned, forged or expired."""
        if not value or "." not in value:
            return None
        body, mac = value.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        try:
            doc = json.loads(_unb64(body))
            session = Session(name=str(doc["u"]), sid=str(doc["s"]), expires_at=int(doc["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires_at > self.clock() else None

    def csrf_token(self, anchor: str) -> str:
        """Return the CSRF token of a session id (or of a login page's pre-session value)."""
        return self._mac("csrf", anchor)

    def csrf_ok(self, anchor: str | None, token: str | None) -> bool:
        """Return whether token is the CSRF token of anchor."""
        if not anchor or not token:
            return False
        return hmac.compare_digest(token, self.csrf_token(anchor))


def session_key(share_secret: str) -> bytes:
    """Return the console's signing key, derived from the share secret (a key of its own
    purpose: a share code can never pass for a session, nor the reverse)."""
    return hmac.new(share_secret.encode(), b"mingpian console sessions v1",
                    hashlib.sha256).digest()
