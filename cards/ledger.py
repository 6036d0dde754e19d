"""The append-only, hash-chained rewards ledger (CONTRACTS §7.8): pure functions over dicts.

Each entry carries `seq` (1, 2, ...), `prev_hash` (the previous entry's `hash`, or 64 zeros
for the first) and `hash = sha256(prev_hash + canonical_json(entry without "hash"))`, so an
edited, deleted or reordered entry breaks the chain at that entry.

The chain alone cannot tell a ledger whose last entries were removed (and whose recorded head
was rewound to match) from a shorter honest one, and anyone who can write the store can
re-hash everything after an edit. So the head (the last entry's hash and the entry count) is
signed with HMAC-SHA256 under `MINGPIAN_LEDGER_KEY`, a key the store never holds: a rewritten
or cut chain needs a new head tag, which only the key's holder can make. A stolen old head
(an earlier, validly signed one put back with the entries after it) is caught only by
comparing with a head anchored elsewhere (`mingpian audit head`, `audit verify --expect-head`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GENESIS_HASH = "0" * 64
# The key used when MINGPIAN_LEDGER_KEY is not set (demo mode and tests): public, so it proves
# nothing; serve and worker refuse to start without a real key outside demo mode.
DEMO_LEDGER_KEY = b"mingpian-demo-ledger-key (public, not a secret)"
_HEAD_TAG_VERSION = "mingpian-ledger-head:v1"
PSEUDONYM_PREFIX = "anon:"
_CHAIN_FIELDS = ("seq", "prev_hash", "hash")


def canonical_json(value: Any) -> str:
    """Return the one canonical JSON text of `value` (sorted keys, no spaces, raw UTF-8)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(entry: Mapping[str, Any], *, prev_hash: str) -> str:
    """Return the hex sha256 of `prev_hash` + the canonical JSON of `entry` minus its `hash`."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256((prev_hash + canonical_json(body)).encode("utf-8")).hexdigest()


def chain(
    entries: Iterable[Mapping[str, Any]],
    *,
    prev_hash: str = GENESIS_HASH,
    start_seq: int = 1,
) -> list[dict[str, Any]]:
    """Return copies of `entries` with `seq`, `prev_hash` and `hash` added, linked in order.

    To append to an existing ledger pass its last `hash` and last `seq` + 1.
    """
    chained: list[dict[str, Any]] = []
    seq = start_seq
    for entry in entries:
        row = {k: v for k, v in entry.items() if k not in _CHAIN_FIELDS}
        row["seq"] = seq
        row["prev_hash"] = prev_hash
        row["hash"] = entry_hash(row, prev_hash=prev_hash)
        chained.append(row)
        prev_hash = row["hash"]
        seq += 1
    return chained


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of `verify`: ok, or the seq of the first entry that fails and why."""

    ok: bool
    first_bad_seq: int | None = None
    reason: str = ""


def verify(
    entries: Sequence[Mapping[str, Any]],
    *,
    prev_hash: str = GENESIS_HASH,
    start_seq: int = 1,
    head_hash: str | None = None,
) -> VerifyResult:
    """Return whether `entries` form an intact chain, naming the first bad `seq` if not.

    A deleted or reordered entry shows as a `seq` out of place (the seq that should be there
    is named); an edited one as a `hash` that no longer matches. Deleting the last entries
    leaves a valid shorter chain: pass the `head_hash` recorded elsewhere to catch that.
    """
    expected_seq = start_seq
    for entry in entries:
        seq = entry.get("seq")
        if seq != expected_seq:
            return VerifyResult(
                ok=False,
                first_bad_seq=expected_seq,
                reason=f"expected seq {expected_seq}, found {seq!r}: an entry was deleted or moved",
            )
        if entry.get("prev_hash") != prev_hash:
            return VerifyResult(
                ok=False,
                first_bad_seq=expected_seq,
                reason=f"entry {expected_seq} does not follow the entry before it (prev_hash)",
            )
        recorded = entry.get("hash")
        if recorded != entry_hash(entry, prev_hash=prev_hash):
            return VerifyResult(
                ok=False,
                first_bad_seq=expected_seq,
                reason=f"entry {expected_seq} was altered (hash mismatch)",
            )
        prev_hash = str(recorded)
        expected_seq += 1
    if head_hash is not None and head_hash != prev_hash:
        return VerifyResult(
            ok=False,
            first_bad_seq=expected_seq,
            reason=f"the chain ends before the recorded head: entries from {expected_seq} are missing",
        )
    return VerifyResult(ok=True)


def head_tag(*, key: bytes, count: int, head: str) -> str:
    """Return the hex HMAC-SHA256 under key of the ledger's head: its entry count and last hash."""
    message = f"{_HEAD_TAG_VERSION}:{count}:{head}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def head_tag_ok(tag: str, *, key: bytes, count: int, head: str) -> bool:
    """Return whether tag is the head tag of (count, head) under key (constant-time compare)."""
    return hmac.compare_digest(tag, head_tag(key=key, count=count, head=head))


def pseudonymise(user_id: str, *, secret: bytes | str) -> str:
    """Return the stable pseudonym ("anon:" + HMAC-SHA256 hex) that replaces an erased user id."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    digest = hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest
