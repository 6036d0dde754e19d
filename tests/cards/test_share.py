"""Share codes (unguessable, unforgeable, ≤ 32 chars), visits once a day, clicks, erasure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest

from cards.share import CODE_RE, NS_CODE, NS_VISIT, code_for
from store import Batch, CommitResult, Store
from store.retry import ContentionError
from tests.cards.support import DAY, SECRET, Clock, make_ledger


def _doc(store: Store, code: str) -> dict[str, Any]:
    """Return the stored mapping of a share code (the test made it)."""
    record = store.get(NS_CODE, code)
    assert record is not None
    return record.doc


def test_code_fits_a_mini_program_scene_and_is_stable_per_sharer(store: Store) -> None:
    _, shares = make_ledger(store, Clock())
    a = shares.create(card_id="card-1", sharer_id="u-1")
    assert len(a.code) <= 32 and CODE_RE.match(a.code)
    assert shares.create(card_id="card-1", sharer_id="u-1").code == a.code
    others = {shares.create(card_id="card-1", sharer_id=f"u-{n}").code for n in range(2, 40)}
    assert len(others) == 38 and a.code not in others
    assert shares.resolve(a.code) == a


def test_code_is_an_hmac_of_card_sharer_and_nonce(store: Store) -> None:
    _, shares = make_ledger(store, Clock())
    a = shares.create(card_id="card-1", sharer_id="u-1")
    nonce = _doc(store, a.code)["nonce"]
    assert code_for(SECRET, card_id="card-1", sharer_id="u-1", nonce=nonce) == a.code
    assert code_for(b"another secret", card_id="card-1", sharer_id="u-1", nonce=nonce) != a.code


def test_forged_or_unknown_codes_resolve_to_nothing(store: Store) -> None:
    _, shares = make_ledger(store, Clock())
    real = shares.create(card_id="card-1", sharer_id="u-1")
    forged = "A" * 22
    # Someone with store access but not the secret writes a mapping of their own ...
    store.put(NS_CODE, forged, {"code": forged, "card_id": "card-1", "sharer_id": "evil",
                                "nonce": "00", "created_ts": 0})
    assert shares.resolve(forged) is None
    # ... or re-points a real code at themselves.
    doc = dict(_doc(store, real.code))
    store.put(NS_CODE, real.code, doc | {"sharer_id": "evil"})
    assert shares.resolve(real.code) is None
    for bad in ("", "short", "x" * 23, "../../etc", "A" * 21 + "!"):
        assert shares.resolve(bad) is None


def test_one_visit_per_visitor_per_local_day(store: Store) -> None:
    clock = Clock(1_764_000_000)  # 2025-11-25 00:00 Beijing is 16:00Z the day before
    _, shares = make_ledger(store, clock)
    share = shares.create(card_id="card-1", sharer_id="u-1")
    assert shares.record_visit(share, visitor_id="v1")
    assert not shares.record_visit(share, visitor_id="v1")
    assert shares.record_visit(share, visitor_id="v2")
    clock.advance(DAY)
    assert shares.record_visit(share, visitor_id="v1")
    assert store.count(NS_VISIT) == 3


def test_clicks_are_listed_with_the_visit(store: Store) -> None:
    clock = Clock()
    _, shares = make_ledger(store, clock)
    share = shares.create(card_id="card-1", sharer_id="u-1")
    shares.record_visit(share, visitor_id="v1")
    clock.advance(30)
    shares.record_click(share, visitor_id="v1", item_id="sku-1")
    shares.record_click(share, visitor_id="v1", item_id="sku-2")
    [visit] = shares.list_visits("card-1")
    assert visit["visitor_id"] == "v1" and visit["sharer_id"] == "u-1"
    assert [c["item_id"] for c in visit["clicks"]] == ["sku-1", "sku-2"]
    assert shares.list_visits("card-2") == []


def test_erasure_removes_visits_clicks_and_own_codes(store: Store) -> None:
    clock = Clock()
    _, shares = make_ledger(store, clock)
    mine = shares.create(card_id="card-1", sharer_id="u-9")
    other = shares.create(card_id="card-1", sharer_id="u-1")
    shares.record_visit(other, visitor_id="u-9")
    shares.record_click(other, visitor_id="u-9", item_id="sku-1")
    shares.record_visit(mine, visitor_id="v2")
    assert shares.erase_user("u-9") > 0
    assert shares.resolve(mine.code) is None
    visitors = [v["visitor_id"] for v in shares.list_visits("card-1")]
    assert visitors == ["v2"]
    assert shares.list_visits("card-1")[0]["sharer_id"] is None  # the erased sharer's code


class _Contended:
    """A store whose next `times` commits each lose a real race: a rival write lands first."""

    def __init__(self, inner: Store, *, rival: Callable[[int], object], times: int) -> None:
        self.inner, self.rival, self.left, self.raced = inner, rival, times, 0

    def commit(self, batch: Batch) -> CommitResult:
        if self.left > 0:
            self.left -= 1
            self.raced += 1
            self.rival(self.raced)
        return self.inner.commit(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_click_under_contention_is_recorded_never_dropped(store: Store) -> None:
    clock = Clock()
    _, rivals = make_ledger(store, clock)
    share = rivals.create(card_id="card-1", sharer_id="u-1")
    # The same visitor taps other items in other requests while this click is being written.
    contended = _Contended(store, times=12, rival=lambda n: rivals.record_click(
        share, visitor_id="v1", item_id=f"other-{n}"))
    _, shares = make_ledger(cast(Store, contended), clock)
    assert shares.record_click(share, visitor_id="v1", item_id="sku-1")
    assert contended.raced == 12  # more than the ten tries the old loop gave before dropping it
    clicks = [c["item_id"] for c in shares.list_visits("card-1")[0]["clicks"]]
    assert sorted(clicks) == sorted(["sku-1", *(f"other-{n}" for n in range(1, 13))])


def test_a_click_that_never_wins_its_race_is_an_error(store: Store) -> None:
    clock = Clock()
    _, rivals = make_ledger(store, clock)
    share = rivals.create(card_id="card-1", sharer_id="u-1")
    contended = _Contended(store, times=10_000, rival=lambda n: rivals.record_click(
        share, visitor_id="v1", item_id=f"other-{n}"))
    _, shares = make_ledger(cast(Store, contended), clock)
    with pytest.raises(ContentionError):
        shares.record_click(share, visitor_id="v1", item_id="sku-1")
    with pytest.raises(ContentionError):
        shares.record_visit(share, visitor_id="v1")
