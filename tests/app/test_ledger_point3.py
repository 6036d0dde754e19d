"""Issue 12 point 3: the ledger cannot be edited quietly (both back-ends, through the CLI).

The insider here is a competent one: besides editing rows with sqlite3 or a redis client, it
re-hashes the chain after its change, rewrites every beneficiary's copies to match and
rewinds the recorded head. Only the head's HMAC tag (a key the store never holds) or a head
anchored elsewhere can give it away; balances never count what it wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from app.settings import Settings
from cards.ledger import DEMO_LEDGER_KEY, GENESIS_HASH, chain, head_tag
from store.base import dumps
from tests.app.cards_env import running
from tests.app.test_ledger_cli import _sqlite, edit, populated, run  # noqa: F401
from tests.app.test_orders_api import rewards, send

Rows = list[dict[str, Any]]


def _ledger_state(settings: Settings) -> tuple[Rows, dict[str, Any], dict[str, str]]:
    """Return the stored ledger rows, the raw cursor doc and user id -> pseudonym."""
    with running(settings) as env:
        cards = env.services.cards
        assert cards is not None
        rec = env.services.store.get("plan.meta", "cursor")
        assert rec is not None
        names = {u: cards.ledger.names.get(u) or u for u in ("B", "A3", "m")}
        return cards.ledger.ledger_rows(), dict(rec.doc), names


def _rewrite_log(settings: Settings, log: str, rows: Rows) -> None:
    """Replace a whole stored log by rows (as sqlite3 or redis-cli would)."""
    if settings.redis_url:
        r = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        key = f"mp:{{plan}}:l:{log}"
        r.delete(key)
        if rows:
            r.rpush(key, *[dumps(row) for row in rows])
        return
    with _sqlite(settings) as db:
        db.execute("DELETE FROM logs WHERE log=?", (log,))
        db.executemany("INSERT INTO logs (log, seq, entry) VALUES (?,?,?)",
                       [(log, n, dumps(row)) for n, row in enumerate(rows, 1)])


def _put_cursor(settings: Settings, doc: dict[str, Any]) -> None:
    with running(settings) as env:
        env.services.store.put("plan.meta", "cursor", doc)


def forge(settings: Settings, change: Callable[[Rows], Rows]) -> dict[str, Any]:
    """Change the ledger rows, re-hash the chain, rewrite the copies and rewind the head.

    The head's tag is left as it was: the insider cannot compute a new one. Returns the
    forged cursor.
    """
    rows, cursor, _ = _ledger_state(settings)
    bodies = [{k: v for k, v in r.items() if k not in ("seq", "prev_hash", "hash")}
              for r in change(rows)]
    forged = chain(bodies)
    _rewrite_log(settings, "plan.ledger", forged)
    for name in {str(r["beneficiary"]) for r in rows}:
        _rewrite_log(settings, f"plan.ben.{name}",
                     [r for r in forged if r["beneficiary"] == name])
    cursor |= {"ledger": len(forged), "head": forged[-1]["hash"] if forged else GENESIS_HASH}
    _put_cursor(settings, cursor)
    return cursor


def _refunded(settings: Settings) -> None:
    """o-m (bought by m, referred by A3 in B's team) refunded in full: two reversals."""
    with running(settings) as env:
        send(env, "o-m", "m", "refunded", refund=10_000)


def _rewards_status(settings: Settings, user: str) -> tuple[int, Any]:
    with running(settings) as env:
        r = env.get("/v1/rewards", params={"user_id": user})
        return r.status_code, r.json()


def test_point3_balances_ignore_edited_copy(populated: Settings) -> None:  # noqa: F811
    with running(populated) as env:
        before = rewards(env, "B")
    rows, _, names = _ledger_state(populated)
    copies = [r for r in rows if r["beneficiary"] == names["B"]]
    edited = [dict(copies[0], amount_cents=copies[0]["amount_cents"] + 100_000), *copies[1:]]
    _rewrite_log(populated, f"plan.ben.{names['B']}", edited)
    with running(populated) as env:
        assert rewards(env, "B") == before


def test_point3_edited_balance_copy_caught_by_verify(
    populated: Settings, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    rows, _, names = _ledger_state(populated)
    copies = [r for r in rows if r["beneficiary"] == names["B"]]
    edited = [*copies[:-1], dict(copies[-1], amount_cents=copies[-1]["amount_cents"] + 1)]
    _rewrite_log(populated, f"plan.ben.{names['B']}", edited)
    code, out = run(["audit", "verify"], capsys)
    assert code == 1, out
    assert f"first bad entry is seq {copies[-1]['seq']}" in out and "rewards view of B" in out


def test_point3_deleted_copy_caught_by_verify(
    populated: Settings, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    _refunded(populated)
    rows, _, names = _ledger_state(populated)
    copies = [r for r in rows if r["beneficiary"] == names["A3"]]
    reversal = next(r for r in copies if r["kind"] == "reversal")
    _rewrite_log(populated, f"plan.ben.{names['A3']}", [r for r in copies if r is not reversal])
    code, out = run(["audit", "verify"], capsys)
    assert code == 1 and f"first bad entry is seq {reversal['seq']}" in out, out


def test_point3_deleted_entry_caught(populated: Settings,  # noqa: F811
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A3's refund reversal deleted from the chain and its copies, everything re-hashed."""
    _refunded(populated)
    _, _, names = _ledger_state(populated)

    def drop_reversal(rows: Rows) -> Rows:
        gone = next(r for r in rows if r["kind"] == "reversal" and
                    r["beneficiary"] == names["A3"])
        return [r for r in rows if r is not gone]

    forge(populated, drop_reversal)
    code, out = run(["audit", "verify"], capsys)
    assert code == 1 and "no valid HMAC tag" in out, out
    # The balance is never read from the forged chain: the read fails closed instead.
    status, body = _rewards_status(populated, "A3")
    assert status == 500 and body["error"]["code"] == "ledger_integrity"


def test_point3_reordered_entries_caught(populated: Settings,  # noqa: F811
                                         capsys: pytest.CaptureFixture[str]) -> None:
    forge(populated, lambda rows: [rows[1], rows[0], *rows[2:]])
    code, out = run(["audit", "verify"], capsys)
    assert code == 1 and "no valid HMAC tag" in out, out


def test_point3_cut_tail_caught_by_keyed_head(populated: Settings,  # noqa: F811
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The last entries removed and the unkeyed head rewound: the chain alone looks fine."""
    _refunded(populated)
    rows, cursor, _ = _ledger_state(populated)
    keep = len(rows) - 2  # the two refund reversals
    _rewrite_log(populated, "plan.ledger", rows[:keep])
    for name in {str(r["beneficiary"]) for r in rows}:
        _rewrite_log(populated, f"plan.ben.{name}",
                     [r for r in rows[:keep] if r["beneficiary"] == name])
    _put_cursor(populated, cursor | {"ledger": keep, "head": rows[keep - 1]["hash"]})
    code, out = run(["audit", "verify"], capsys)
    assert code == 1 and f"first bad entry is seq {keep + 1}" in out, out
    assert "HMAC" in out
    status, body = _rewards_status(populated, "A3")
    assert status == 500 and body["error"]["code"] == "ledger_integrity"
    # The applier refuses to sign new entries onto the rewound head.
    with running(populated) as env:
        r = env.post("/v1/orders", {"order_id": "o-new", "user_id": "m", "status": "completed",
                                    "amount_cents": 100, "items": []})
        assert r.status_code == 500 and r.json()["error"]["code"] == "ledger_integrity"


def test_point3_audit_head_prints_keyed_head(populated: Settings,  # noqa: F811
                                             capsys: pytest.CaptureFixture[str]) -> None:
    rows, cursor, _ = _ledger_state(populated)
    code, out = run(["audit", "head"], capsys)
    assert code == 0, out
    line = next(ln for ln in out.splitlines() if ln.startswith("entries="))
    fields = dict(part.split("=", 1) for part in line.split())
    assert fields["entries"] == str(len(rows)) == str(cursor["ledger"])
    assert fields["head"] == rows[-1]["hash"] == cursor["head"]
    assert fields["tag"] == head_tag(key=DEMO_LEDGER_KEY, count=len(rows), head=rows[-1]["hash"])
    assert "public demo key" in out  # MINGPIAN_LEDGER_KEY is not set in tests: say so
    assert run(["audit", "verify", "--expect-head", fields["head"]], capsys)[0] == 0


def test_point3_expect_head_catches_a_replayed_old_head(
    populated: Settings, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    """An old, validly signed cursor put back with the entries after it removed."""
    old_rows, old_cursor, _ = _ledger_state(populated)
    _refunded(populated)
    code, out = run(["audit", "head"], capsys)
    anchored = dict(p.split("=", 1) for p in out.split("\n")[-2].split())["head"]
    _rewrite_log(populated, "plan.ledger", old_rows)
    for name in {str(r["beneficiary"]) for r in old_rows}:
        _rewrite_log(populated, f"plan.ben.{name}",
                     [r for r in old_rows if r["beneficiary"] == name])
    _put_cursor(populated, old_cursor)
    assert run(["audit", "verify"], capsys)[0] == 0  # indistinguishable without an anchor
    code, out = run(["audit", "verify", "--expect-head", anchored], capsys)
    assert code == 1 and f"anchored head {anchored} is not in the chain" in out, out


def test_point3_head_sign_adopts_an_unkeyed_head(populated: Settings,  # noqa: F811
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A ledger written before the head was keyed: refused until an operator signs it."""
    _, cursor, _ = _ledger_state(populated)
    _put_cursor(populated, {k: v for k, v in cursor.items() if k != "tag"})
    assert run(["audit", "head"], capsys)[0] == 1
    code, out = run(["audit", "head", "--sign"], capsys)
    assert code == 0 and f"tag={cursor['tag']}" in out, out
    assert run(["audit", "verify"], capsys)[0] == 0


def test_point3_head_sign_refuses_a_broken_chain(populated: Settings,  # noqa: F811
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    edit(populated, 2)
    code, out = run(["audit", "head", "--sign"], capsys)
    assert code == 1 and "seq 2" in out, out
