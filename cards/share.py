"""Share codes, visits and clicks: the salesperson's "radar" (CONTRACTS §6).

A share code is ``base62(HMAC-SHA256(share_secret, card_id, sharer_id, nonce))[:22]``:
22 characters (about 131 bits, so unguessable; it fits a mini-program ``scene`` of 32).
The code's record keeps card, sharer and nonce, and a code is honoured only if it is the
HMAC of its record, so a mapping written into the store without the secret is refused
(unforgeable). One sharer gets one code per card: sharing again returns the same code.

Store family ``share``:

    share.code/<code>                       card_id, sharer_id, nonce, created_ts
    share.pair/<card_id>|<sharer_id>        code (one code per card and sharer)
    share.bysharer/<sharer_id>|<code>       index for erasure
    share.visit/<card_id>|<day>|<visitor>   one visit per visitor per local day, with clicks
    share.byvisitor/<visitor>|<card_id>|<day>  index for erasure
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from store import Batch, CommitResult, Store

NS_CODE = "share.code"
NS_PAIR = "share.pair"
NS_BYSHARER = "share.bysharer"
NS_VISIT = "share.visit"
NS_BYVISITOR = "share.byvisitor"

CODE_LENGTH = 22
CODE_RE = re.compile(rf"^[0-9A-Za-z]{{{CODE_LENGTH}}}$")
MAX_CLICKS_PER_VISIT = 200
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 62)
        out.append(_B62[r])
    return "".join(reversed(out)) or "0"


def code_for(secret: bytes, *, card_id: str, sharer_id: str, nonce: str) -> str:
    """Return the share code of (card, sharer, nonce) under secret."""
    mac = hmac.new(secret, f"{card_id}\n{sharer_id}\n{nonce}".encode(), hashlib.sha256).digest()
    # 32 bytes give 43 base-62 digits; the leading ones carry full entropy.
    return _base62(mac).rjust(43, "0")[:CODE_LENGTH]


def local_day(ts: float, *, tz_offset_hours: int) -> str:
    """Return the local calendar day (YYYY-MM-DD) of a Unix time."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts + tz_offset_hours * 3600))


@dataclass(frozen=True)
class Share:
    """A share code and what it stands for."""

    code: str
    card_id: str
    sharer_id: str
    created_ts: int


class Shares:
    """Creates and resolves share codes; records visits and clicks."""

    def __init__(self, store: Store, *, secret: bytes, tz_offset_hours: int,
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.secret = secret
        self.tz_offset_hours = tz_offset_hours
        self.clock = clock

    # ------------------------------------------------------------------ codes

    def create(self, *, card_id: str, sharer_id: str) -> Share:
        """Return the sharer's code for the card, creating it the first time."""
        pair = f"{card_id}|{sharer_id}"
        for _ in range(10):
            rec = self.store.get(NS_PAIR, pair)
            if rec is not None:
                found = self.resolve(str(rec.doc["code"]))
                if found is not None:
                    return found
            nonce = secrets.token_hex(16)
            code = code_for(self.secret, card_id=card_id, sharer_id=sharer_id, nonce=nonce)
            created = int(self.clock())
            doc = {"code": code, "card_id": card_id, "sharer_id": sharer_id, "nonce": nonce,
                   "created_ts": created}
            batch = Batch(
                puts=[(NS_CODE, code, doc), (NS_PAIR, pair, {"code": code}),
                      (NS_BYSHARER, f"{sharer_id}|{code}", {})],
                checks=[(NS_CODE, code, 0), (NS_PAIR, pair, rec.version if rec else 0)],
            )
            if self.store.commit(batch) is CommitResult.OK:
                return Share(code, card_id, sharer_id, created)
        raise RuntimeError("could not create a share code")  # pragma: no cover

    def resolve(self, code: str) -> Share | None:
        """Return the share a code stands for, or None (unknown, malformed or forged)."""
        if not CODE_RE.match(code):
            return None
        rec = self.store.get(NS_CODE, code)
        if rec is None:
            return None
        d = rec.doc
        expected = code_for(self.secret, card_id=str(d["card_id"]),
                            sharer_id=str(d["sharer_id"]), nonce=str(d["nonce"]))
        if not hmac.compare_digest(expected, code):
            return None
        return Share(code, str(d["card_id"]), str(d["sharer_id"]), int(d["created_ts"]))

    def sharer_of(self, code: str) -> str | None:
        """Return the sharer behind a code, or None."""
        share = self.resolve(code)
        return None if share is None else share.sharer_id

    # ------------------------------------------------------------------ visits

    def _keys(self, card_id: str, visitor_id: str, ts: float) -> tuple[str, str, str]:
        day = local_day(ts, tz_offset_hours=self.tz_offset_hours)
        return day, f"{card_id}|{day}|{visitor_id}", f"{visitor_id}|{card_id}|{day}"

    def _new_visit(self, share: Share, visitor_id: str, day: str, ts: int, *, opened: bool
                   ) -> dict[str, Any]:
        return {"card_id": share.card_id, "day": day, "visitor_id": visitor_id,
                "code": share.code, "first_ts": ts if opened else None, "clicks": []}

    def record_visit(self, share: Share, *, visitor_id: str) -> bool:
        """Record that visitor opened the shared card; return False if already seen today."""
        ts = int(self.clock())
        day, key, index = self._keys(share.card_id, visitor_id, ts)
        for _ in range(10):
            rec = self.store.get(NS_VISIT, key)
            if rec is not None and rec.doc.get("first_ts") is not None:
                return False
            doc = rec.doc if rec is not None else self._new_visit(share, visitor_id, day, ts,
                                                                  opened=True)
            doc["first_ts"] = ts
            batch = Batch(puts=[(NS_VISIT, key, doc), (NS_BYVISITOR, index, {})],
                          checks=[(NS_VISIT, key, rec.version if rec else 0)])
            if self.store.commit(batch) is CommitResult.OK:
                return True
        return False

    def record_click(self, share: Share, *, visitor_id: str, item_id: str) -> None:
        """Record that visitor tapped an item on the shared card."""
        ts = int(self.clock())
        day, key, index = self._keys(share.card_id, visitor_id, ts)
        for _ in range(10):
            rec = self.store.get(NS_VISIT, key)
            doc = rec.doc if rec is not None else self._new_visit(share, visitor_id, day, ts,
                                                                  opened=False)
            clicks = list(doc.get("clicks", []))
            if len(clicks) >= MAX_CLICKS_PER_VISIT:
                return
            doc["clicks"] = [*clicks, {"item_id": item_id, "ts": ts, "code": share.code}]
            batch = Batch(puts=[(NS_VISIT, key, doc), (NS_BYVISITOR, index, {})],
                          checks=[(NS_VISIT, key, rec.version if rec else 0)])
            if self.store.commit(batch) is CommitResult.OK:
                return

    def list_visits(self, card_id: str, *, limit: int = 500) -> list[dict[str, Any]]:
        """Return the card's visits, latest first: who opened, when, what they clicked."""
        rows = [rec.doc for _, rec in self.store.scan(NS_VISIT, prefix=f"{card_id}|")]
        sharers: dict[str, str | None] = {}
        for row in rows:
            # The sharer is looked up, not copied, so erasing a sharer leaves no trace here.
            code = str(row.get("code", ""))
            if code not in sharers:
                sharers[code] = self.sharer_of(code)
            row["sharer_id"] = sharers[code]
        rows.sort(key=lambda d: (d["day"], d.get("first_ts") or 0), reverse=True)
        return rows[:limit]

    # ------------------------------------------------------------------ erasure

    def erase_user(self, user_id: str) -> int:
        """Delete the user's visits and clicks and the share codes it made; return how many."""
        deletes: list[tuple[str, str]] = []
        for key, _ in self.store.scan(NS_BYVISITOR, prefix=f"{user_id}|"):
            _, card_id, day = key.split("|", 2)
            deletes += [(NS_BYVISITOR, key), (NS_VISIT, f"{card_id}|{day}|{user_id}")]
        for key, _ in self.store.scan(NS_BYSHARER, prefix=f"{user_id}|"):
            code = key.split("|", 1)[1]
            share = self.store.get(NS_CODE, code)
            deletes += [(NS_BYSHARER, key), (NS_CODE, code)]
            if share is not None:
                deletes.append((NS_PAIR, f"{share.doc['card_id']}|{user_id}"))
        if deletes:
            self.store.commit(Batch(deletes=deletes))
        return len(deletes)
