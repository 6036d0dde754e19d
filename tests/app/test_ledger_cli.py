"""`mingpian audit verify` and `mingpian ledger rebuild|apply`, on the stored data itself.

Tampering is done the way an insider would: sqlite3 on the database file, a redis client
on the ledger's list key.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
import redis

from app import cli
from app.settings import Settings, get_settings
from cards.ledger import DEMO_LEDGER_KEY, chain, head_tag
from store import Batch
from tests.app.cards_env import running
from tests.app.test_orders_api import bind, complete, team
from tests.cards.support import T0

REDIS_LEDGER = "mp:{plan}:l:plan.ledger"


@pytest.fixture
def populated(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings whose store holds a team's orders, and the CLI's environment pointing at it."""
    with running(settings) as env:
        team(env)
        bind(env, "m", "A3")
        complete(env, "o-m", "m")
    monkeypatch.setenv("MINGPIAN_DATA_DIR", str(settings.data_dir))
    if settings.redis_url:
        monkeypatch.setenv("MINGPIAN_REDIS_URL", settings.redis_url)
    else:
        monkeypatch.delenv("MINGPIAN_REDIS_URL", raising=False)
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(args)
    return code, capsys.readouterr().out


# --------------------------------------------------------------------------- tampering


def _sqlite(settings: Settings) -> closing[sqlite3.Connection]:
    """The store's database, opened as an insider would (closed on leaving the with)."""
    return closing(sqlite3.connect(settings.data_dir / "mingpian.db", isolation_level=None))


def _lindex(r: redis.Redis[str], index: int) -> str:
    """Return ledger entry index (0-based); the test only asks for ones it wrote."""
    entry = r.lindex(REDIS_LEDGER, index)
    assert entry is not None
    return entry


def edit(settings: Settings, seq: int) -> None:
    """Raise the amount of entry seq by one yuan."""
    if settings.redis_url:
        r = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        row = json.loads(_lindex(r, seq - 1))
        row["amount_cents"] += 100
        r.lset(REDIS_LEDGER, seq - 1, json.dumps(row, ensure_ascii=False))
        return
    with _sqlite(settings) as db:
        (text,) = db.execute("SELECT entry FROM logs WHERE log='plan.ledger' AND seq=?",
                             (seq,)).fetchone()
        row = json.loads(text)
        row["amount_cents"] += 100
        db.execute("UPDATE logs SET entry=? WHERE log='plan.ledger' AND seq=?",
                   (json.dumps(row), seq))


def delete(settings: Settings, seq: int) -> None:
    """Remove entry seq."""
    if settings.redis_url:
        r = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        r.lset(REDIS_LEDGER, seq - 1, "__gone__")
        r.lrem(REDIS_LEDGER, 1, "__gone__")
        return
    with _sqlite(settings) as db:
        db.execute("DELETE FROM logs WHERE log='plan.ledger' AND seq=?", (seq,))


def swap(settings: Settings, seq: int) -> None:
    """Swap entries seq and seq + 1."""
    if settings.redis_url:
        r = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        a, b = _lindex(r, seq - 1), _lindex(r, seq)
        r.lset(REDIS_LEDGER, seq - 1, b)
        r.lset(REDIS_LEDGER, seq, a)
        return
    with _sqlite(settings) as db:
        rows = dict(db.execute("SELECT seq, entry FROM logs WHERE log='plan.ledger' AND seq IN "
                               "(?, ?)", (seq, seq + 1)).fetchall())
        db.execute("UPDATE logs SET entry=? WHERE log='plan.ledger' AND seq=?",
                   (rows[seq + 1], seq))
        db.execute("UPDATE logs SET entry=? WHERE log='plan.ledger' AND seq=?",
                   (rows[seq], seq + 1))


def test_audit_verify_passes_an_intact_ledger(populated: Settings,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(["audit", "verify"], capsys)
    assert code == 0 and "hash chain intact" in out


@pytest.mark.parametrize("tamper", [edit, delete, swap], ids=["edited", "deleted", "reordered"])
def test_audit_verify_names_the_first_altered_entry(
    populated: Settings, capsys: pytest.CaptureFixture[str],
    tamper: Callable[[Settings, int], None],
) -> None:
    tamper(populated, 2)
    code, out = run(["audit", "verify"], capsys)
    assert code == 1 and "first bad entry is seq 2" in out, out


def test_audit_verify_catches_a_deleted_last_entry(populated: Settings,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with running(populated) as env:
        last = env.services.cards.ledger.cursor().ledger
    delete(populated, last)
    code, out = run(["audit", "verify"], capsys)
    assert code == 1 and f"seq {last}" in out


# --------------------------------------------------------------------------- rebuild


def test_ledger_rebuild_gives_identical_balances(populated: Settings,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(["ledger", "rebuild"], capsys)
    assert code == 0 and "identical" in out


def test_ledger_rebuild_prints_a_diff_and_write_corrects_it(
    populated: Settings, capsys: pytest.CaptureFixture[str],
) -> None:
    with running(populated) as env:
        cards = env.services.cards
        assert cards is not None
        ledger = cards.ledger
        b = ledger.names.get("B")
        cur = ledger.cursor()
        # A buggy applier (it holds the ledger key) paid B 5 yuan too much.
        [row] = chain([{"order_id": "o-m", "beneficiary": b, "rule": "team", "kind": "credit",
                        "amount_cents": 500, "rate_bp": 500, "base_cents": 10_000,
                        "reason": "team", "path": [b], "completed_ts": T0, "ts": T0}],
                      prev_hash=cur.head, start_seq=cur.ledger + 1)
        env.services.store.commit(Batch(
            appends=[("plan.ledger", row), (f"plan.ben.{b}", row)],
            puts=[("plan.meta", "cursor", {"events": cur.events, "ledger": row["seq"],
                                           "head": row["hash"],
                                           "tag": head_tag(key=DEMO_LEDGER_KEY,
                                                           count=row["seq"],
                                                           head=row["hash"])})]))
    code, out = run(["ledger", "rebuild"], capsys)
    assert code == 1 and "balance of B" in out and f"entry {row['seq']}" in out
    code, out = run(["ledger", "rebuild", "--write"], capsys)
    assert code == 0 and "wrote 1 correction" in out
    assert run(["ledger", "rebuild"], capsys)[0] == 0
    assert run(["audit", "verify"], capsys)[0] == 0


def test_ledger_apply_catches_up_a_backlog(populated: Settings,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from tests.cards.support import order

    with running(populated) as env:
        env.services.cards.ledger.submit_order(order("o-late", "m", "refunded", refund=10_000),
                                               ref_code=None, apply=False)
    code, out = run(["ledger", "apply"], capsys)
    assert code == 0 and "applied 1" in out


def test_cli_help_lists_the_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["ledger", "--help"])
    assert "rebuild" in capsys.readouterr().out
    assert Path(cli.__file__).exists()
