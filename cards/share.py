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

Visits are kept for a retention period (``purge_visits``), and a visit lists each item
clicked once, so neither the radar nor its totals grow with repeated requests.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from models import b64
from models.errors import ValidationFailed
from store import Batch, CommitResult, Store
from store.retry import AGAIN, Again, retry

NS_CODE = "share.code"
NS_PAIR = "share.pair"
NS_BYSHARER = "share.bysharer"
NS_VISIT = "share.visit"
NS_BYVISITOR = "share.byvisitor"

CODE_LENGTH = 22
CODE_RE = re.compile(rf"^[0-9A-Za-z]{{{CODE_LENGTH}}}$")
MAX_CLICKS_PER_VISIT = 200
_PURGE_CHUNK = 500
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


def _sort_key(row: dict[str, Any]) -> tuple[str, int, str]:
    """Radar order, latest first when reversed: day, first open, visitor."""
    return str(row["day"]), int(row.get("first_ts") or 0), str(row["visitor_id"])


def encode_cursor(key: tuple[str, int, str]) -> str:
    """Return the opaque cursor after the row with this sort key."""
    return b64.encode(json.dumps(list(key)).encode())


def decode_cursor(cursor: str) -> tuple[str, int, str]:
    """Return the sort key of a cursor, or raise ValidationFailed."""
    try:
        day, ts, visitor = json.loads(b64.decode(cursor))
        return str(day), int(ts), str(visitor)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as e:
        raise ValidationFailed("cursor is not one this API returned") from e


@dataclass(frozen=True)
class VisitPage:
    """One page of the radar, with totals over every visit kept."""

    rows: list[dict[str, Any]]
    next_cursor: str | None
    visitors: int
    opens: int
    clicks: int


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
                 clock: Callable[[], float], old_secrets: Sequence[bytes] = ()) -> None:
        self.store = store
        self.secret = secret
        # Codes made under an earlier secret still verify: printed QR codes outlive rotations.
        self.secrets = [secret, *[o for o in old_secrets if o and o != secret]]
        self.tz_offset_hours = tz_offset_hours
        self.clock = clock

    # ------------------------------------------------------------------ codes

    def create(self, *, card_id: str, sharer_id: str) -> Share:
        """Return the sharer's code for the card, creating it the first time."""
        pair = f"{card_id}|{sharer_id}"

        def attempt(_: int) -> Share | Again:
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
            return AGAIN

        return retry(attempt, what=f"the share code of card {card_id} for {sharer_id}")

    def resolve(self, code: str) -> Share | None:
        """Return the share a code stands for, or None (unknown, malformed or forged)."""
        if not CODE_RE.match(code):
            return None
        rec = self.store.get(NS_CODE, code)
        if rec is None:
            return None
        d = rec.doc
        if not any(hmac.compare_digest(code_for(key, card_id=str(d["card_id"]),
                                                sharer_id=str(d["sharer_id"]),
                                                nonce=str(d["nonce"])), code)
                   for key in self.secrets):
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

        def attempt(_: int) -> bool | Again:
            rec = self.store.get(NS_VISIT, key)
            if rec is not None and rec.doc.get("first_ts") is not None:
                return False
            doc = rec.doc if rec is not None else self._new_visit(share, visitor_id, day, ts,
                                                                  opened=True)
            doc["first_ts"] = ts
            return self._commit_visit(key, index, doc, rec.version if rec else 0)

        return retry(attempt, what=f"a visit to card {share.card_id}")

    def record_click(self, share: Share, *, visitor_id: str, item_id: str) -> bool:
        """Record that visitor tapped an item on the shared card; False if already today."""
        ts = int(self.clock())
        day, key, index = self._keys(share.card_id, visitor_id, ts)

        def attempt(_: int) -> bool | Again:
            rec = self.store.get(NS_VISIT, key)
            doc = rec.doc if rec is not None else self._new_visit(share, visitor_id, day, ts,
                                                                  opened=False)
            clicks = list(doc.get("clicks", []))
            # One entry per item a day: tapping again (or a script repeating the request)
            # does not inflate the radar.
            if len(clicks) >= MAX_CLICKS_PER_VISIT or any(c.get("item_id") == item_id
                                                          for c in clicks):
                return False
            doc["clicks"] = [*clicks, {"item_id": item_id, "ts": ts, "code": share.code}]
            return self._commit_visit(key, index, doc, rec.version if rec else 0)

        # Out of attempts raises ContentionError: a click is recorded or refused, never lost.
        return retry(attempt, what=f"a visit to card {share.card_id}")

    def _commit_visit(self, key: str, index: str, doc: dict[str, Any], version: int
                      ) -> bool | Again:
        """Write one visit if it is still at version; True when written, else AGAIN."""
        batch = Batch(puts=[(NS_VISIT, key, doc), (NS_BYVISITOR, index, {})],
                      checks=[(NS_VISIT, key, version)])
        return True if self.store.commit(batch) is CommitResult.OK else AGAIN

    def _cutoff_day(self, retention_days: int | None) -> str:
        if retention_days is None:
            return ""
        return local_day(self.clock() - retention_days * 86_400,
                         tz_offset_hours=self.tz_offset_hours)

    def list_visits(self, card_id: str, *, limit: int = 500,
                    retention_days: int | None = None) -> list[dict[str, Any]]:
        """Return the card's visits, latest first: who opened, when, what they clicked."""
        return self.page_visits(card_id, limit=limit, retention_days=retention_days).rows

    def page_visits(self, card_id: str, *, limit: int, cursor: str | None = None,
                    retention_days: int | None = None) -> VisitPage:
        """Return up to limit visits after cursor (latest first) and the card's totals."""
        after = decode_cursor(cursor) if cursor else None
        cutoff = self._cutoff_day(retention_days)
        # Visits older than the retention are not shown even before the purge removes them.
        rows = [rec.doc for _, rec in self.store.scan(NS_VISIT, prefix=f"{card_id}|")
                if str(rec.doc.get("day", "")) >= cutoff]
        rows.sort(key=_sort_key, reverse=True)
        totals = (len({r["visitor_id"] for r in rows}),
                  sum(1 for r in rows if r.get("first_ts") is not None),
                  sum(len(r.get("clicks", [])) for r in rows))
        if after is not None:
            rows = [r for r in rows if _sort_key(r) < after]
        page, more = rows[:limit], len(rows) > limit
        sharers: dict[str, str | None] = {}
        for row in page:
            # The sharer is looked up, not copied, so erasing a sharer leaves no trace here.
            code = str(row.get("code", ""))
            if code not in sharers:
                sharers[code] = self.sharer_of(code)
            row["sharer_id"] = sharers[code]
        return VisitPage(page, encode_cursor(_sort_key(page[-1])) if more and page else None,
                         *totals)

    def purge_visits(self, *, retention_days: int) -> int:
        """Delete visits (and their erasure index) older than retention_days; return how many."""
        cutoff = self._cutoff_day(retention_days)
        # Collect first, delete after: the Redis scan pages by offset, and deleting under
        # it would skip keys.
        old: list[str] = []
        for key, _ in self.store.scan(NS_VISIT):
            if key.split("|", 2)[1] < cutoff:
                old.append(key)
        for start in range(0, len(old), _PURGE_CHUNK):
            deletes: list[tuple[str, str]] = []
            for key in old[start : start + _PURGE_CHUNK]:
                card_id, day, visitor = key.split("|", 2)
                deletes += [(NS_VISIT, key), (NS_BYVISITOR, f"{visitor}|{card_id}|{day}")]
            self.store.commit(Batch(deletes=deletes))
        return len(old)

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
