"""The hash-chained ledger: chaining, and verify naming the first edited, deleted or moved entry."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from cards.ledger import (
    GENESIS_HASH,
    canonical_json,
    chain,
    entry_hash,
    pseudonymise,
    verify,
)


def rows(n: int = 5) -> list[dict[str, Any]]:
    return chain(
        {
            "order_id": f"o-{i}",
            "beneficiary": "小雨妈妈" if i % 2 else "u-1",
            "rule": "direct",
            "kind": "credit",
            "amount_cents": 100 * i,
            "path": ["u-2", "u-1"],
        }
        for i in range(1, n + 1)
    )


def test_chain_adds_seq_prev_hash_and_hash_from_genesis() -> None:
    ledger = rows(3)
    assert [r["seq"] for r in ledger] == [1, 2, 3]
    assert ledger[0]["prev_hash"] == GENESIS_HASH == "0" * 64
    assert ledger[1]["prev_hash"] == ledger[0]["hash"]
    assert ledger[2]["prev_hash"] == ledger[1]["hash"]
    assert verify(ledger).ok


def test_entry_hash_is_sha256_of_prev_hash_and_canonical_json() -> None:
    [first] = rows(1)
    body = {k: v for k, v in first.items() if k != "hash"}
    text = canonical_json(body)
    assert text.startswith('{"amount_cents":100,"beneficiary":"小雨妈妈"')
    assert " " not in text
    expected = hashlib.sha256((GENESIS_HASH + text).encode("utf-8")).hexdigest()
    assert first["hash"] == entry_hash(first, prev_hash=GENESIS_HASH) == expected


def test_canonical_json_keeps_chinese_unescaped_and_keys_sorted() -> None:
    assert canonical_json({"b": "小雨", "a": [1, 2]}) == '{"a":[1,2],"b":"小雨"}'


def test_chain_appends_after_an_existing_head() -> None:
    ledger = rows(3)
    more = chain(
        [{"order_id": "o-9", "amount_cents": 5}], prev_hash=ledger[-1]["hash"], start_seq=4
    )
    assert more[0]["seq"] == 4
    assert verify([*ledger, *more]).ok


def test_chain_ignores_stale_chain_fields_on_input() -> None:
    stale = {"order_id": "o-1", "seq": 99, "prev_hash": "x", "hash": "y"}
    [row] = chain([stale])
    assert (row["seq"], row["prev_hash"]) == (1, GENESIS_HASH)
    assert verify([row]).ok


def test_verify_empty_ledger_is_ok() -> None:
    assert verify([]).ok


@pytest.mark.parametrize("index", [0, 2, 4])
def test_verify_detects_an_edited_entry_and_names_it(index: int) -> None:
    ledger = rows()
    ledger[index]["amount_cents"] += 1
    result = verify(ledger)
    assert not result.ok
    assert result.first_bad_seq == index + 1
    assert "altered" in result.reason


def test_verify_detects_an_edit_with_its_own_hash_recomputed() -> None:
    ledger = rows()
    ledger[1]["beneficiary"] = "mallory"
    ledger[1]["hash"] = entry_hash(ledger[1], prev_hash=ledger[1]["prev_hash"])
    result = verify(ledger)
    # Entry 2 now hashes correctly, but entry 3 no longer follows it.
    assert (result.ok, result.first_bad_seq) == (False, 3)


def test_verify_detects_a_rehashed_rest_of_chain_via_the_head() -> None:
    ledger = rows()
    head = ledger[-1]["hash"]
    ledger[1]["amount_cents"] = 0
    forged = chain(ledger)  # a full rewrite is self-consistent ...
    assert verify(forged).ok
    result = verify(forged, head_hash=head)  # ... but not with the head recorded elsewhere
    assert not result.ok


@pytest.mark.parametrize("index", [0, 2])
def test_verify_detects_a_deleted_entry_and_names_its_seq(index: int) -> None:
    ledger = rows()
    del ledger[index]
    result = verify(ledger)
    assert (result.ok, result.first_bad_seq) == (False, index + 1)
    assert "deleted or moved" in result.reason


def test_verify_detects_a_deleted_last_entry_only_with_the_head() -> None:
    ledger = rows()
    head = ledger[-1]["hash"]
    assert verify(ledger[:-1]).ok
    result = verify(ledger[:-1], head_hash=head)
    assert (result.ok, result.first_bad_seq) == (False, 5)


def test_verify_detects_reordered_entries_and_names_the_first() -> None:
    ledger = rows()
    ledger[1], ledger[3] = ledger[3], ledger[1]
    result = verify(ledger)
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_verify_detects_reorder_with_seq_rewritten() -> None:
    ledger = rows()
    ledger[1], ledger[2] = ledger[2], ledger[1]
    ledger[1]["seq"], ledger[2]["seq"] = 2, 3
    result = verify(ledger)
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_pseudonymise_is_stable_keyed_and_prefixed() -> None:
    a = pseudonymise("u-1001", secret="s3cret")
    assert a.startswith("anon:") and len(a) == len("anon:") + 64
    assert a == pseudonymise("u-1001", secret=b"s3cret")
    assert a != pseudonymise("u-1001", secret="other")
    assert a != pseudonymise("u-1002", secret="s3cret")
    assert "u-1001" not in a
