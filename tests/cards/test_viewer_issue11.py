"""Issue 11 in the cards domain: viewer tokens and visitor cookies (point 3), visit retention
and once-a-day clicks (point 4), and the cached font look-up (point 5)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cards import render
from cards.render import FontMissingError, clear_font_cache, find_cjk_font
from cards.share import NS_BYVISITOR, NS_VISIT, Shares, local_day
from cards.viewer import ViewerKeys, Visitor
from store import Store
from tests.cards.support import DAY, SECRET, T0, Clock

OLD = b"an earlier share secret"


def test_point3_token_names_the_member_until_it_expires() -> None:
    keys = ViewerKeys(SECRET)
    token = keys.issue_token("u-42", expires_at=T0 + 60)
    assert keys.read_token(token, now=T0) == Visitor("u-42", True, T0 + 60)
    assert keys.read_token(token, now=T0 + 60) is None
    assert ViewerKeys(b"someone else's secret").read_token(token, now=T0) is None


def test_point3_tampered_viewer_token_is_anonymous() -> None:
    keys = ViewerKeys(SECRET)
    token = keys.issue_token("u-42", expires_at=T0 + 60)
    body, mac = token.split(".")
    other_body = keys.issue_token("u-43", expires_at=T0 + 60).split(".")[0]
    for bad in (f"{other_body}.{mac}", f"{body}.{mac[::-1]}", body, "", "a.b.c", "%%.%%",
                token + "x", "." * 600):
        assert keys.read_token(bad, now=T0) is None, bad


def test_point3_token_and_cookie_are_not_interchangeable() -> None:
    keys = ViewerKeys(SECRET)
    token = keys.issue_token("u-42", expires_at=T0 + 60)
    cookie = keys.cookie_value(Visitor("u-42", True, T0 + 60))
    assert keys.read_cookie(token, now=T0) is None
    assert keys.read_token(cookie, now=T0) is None
    assert keys.read_cookie(cookie, now=T0) == Visitor("u-42", True, T0 + 60)


def test_point3_hand_made_cookie_is_anonymous() -> None:
    keys = ViewerKeys(SECRET)
    for value in ("u-42", "v:0123", "", "dS00Mg.AAAA"):
        assert keys.read_cookie(value, now=T0) is None
    # An anonymous cookie cannot be turned into a member one by editing its kind.
    anon = keys.anonymous(client="203.0.113.9", user_agent="phone", now=T0)
    assert not anon.known and anon.id.startswith("v:")
    assert keys.read_cookie(keys.cookie_value(anon), now=T0) == anon


def test_point3_anonymous_id_is_stable_per_client_and_hides_the_address() -> None:
    keys = ViewerKeys(SECRET)
    a = keys.anonymous(client="203.0.113.9", user_agent="phone", now=T0)
    assert keys.anonymous(client="203.0.113.9", user_agent="phone", now=T0 + 5).id == a.id
    assert keys.anonymous(client="203.0.113.9", user_agent="tablet", now=T0).id != a.id
    assert keys.anonymous(client="203.0.113.10", user_agent="phone", now=T0).id != a.id
    assert "203" not in a.id


def test_point3_old_secrets_still_verify() -> None:
    before = ViewerKeys(OLD)
    token = before.issue_token("u-42", expires_at=T0 + 60)
    cookie = before.cookie_value(Visitor("u-42", True, T0 + 60))
    after = ViewerKeys(SECRET, old_secrets=[OLD])
    assert after.read_token(token, now=T0) == Visitor("u-42", True, T0 + 60)
    assert after.read_cookie(cookie, now=T0) is not None
    # New ones are signed with the current secret only.
    assert before.read_token(after.issue_token("u-1", expires_at=T0 + 60), now=T0) is None
    assert ViewerKeys(SECRET).read_token(token, now=T0) is None


def test_point3_share_codes_made_under_an_old_secret_still_resolve(store: Store) -> None:
    clock = Clock()
    old = Shares(store, secret=OLD, tz_offset_hours=8, clock=clock)
    share = old.create(card_id="card-1", sharer_id="u-1")
    rotated = Shares(store, secret=SECRET, tz_offset_hours=8, clock=clock, old_secrets=[OLD])
    assert rotated.resolve(share.code) == share
    assert Shares(store, secret=SECRET, tz_offset_hours=8, clock=clock).resolve(share.code) is None


def test_point4_visits_are_purged_after_the_retention(store: Store) -> None:
    clock = Clock()
    shares = Shares(store, secret=SECRET, tz_offset_hours=8, clock=clock)
    share = shares.create(card_id="card-1", sharer_id="u-1")
    shares.record_visit(share, visitor_id="u-old")
    clock.advance(20 * DAY)
    shares.record_visit(share, visitor_id="u-new")
    assert {v["visitor_id"] for v in shares.list_visits("card-1")} == {"u-old", "u-new"}
    assert [v["visitor_id"] for v in shares.list_visits("card-1", retention_days=10)] == [
        "u-new"]
    assert shares.purge_visits(retention_days=10) == 1
    assert store.count(NS_VISIT) == 1
    today = local_day(clock(), tz_offset_hours=8)
    assert [k for k, _ in store.scan(NS_BYVISITOR)] == [f"u-new|card-1|{today}"]
    assert shares.purge_visits(retention_days=10) == 0


def test_point4_click_is_listed_once_per_item_a_day(store: Store) -> None:
    clock = Clock()
    shares = Shares(store, secret=SECRET, tz_offset_hours=8, clock=clock)
    share = shares.create(card_id="card-1", sharer_id="u-1")
    assert shares.record_click(share, visitor_id="v1", item_id="sku-1")
    assert not shares.record_click(share, visitor_id="v1", item_id="sku-1")
    assert shares.record_click(share, visitor_id="v1", item_id="sku-2")
    [visit] = shares.list_visits("card-1")
    assert [c["item_id"] for c in visit["clicks"]] == ["sku-1", "sku-2"]


def test_point5_failed_font_lookup_is_cached(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    latin = tmp_path / "latin.ttf"
    latin.write_bytes(b"not a font")
    calls: list[str] = []

    def which(name: str) -> None:
        calls.append(name)

    monkeypatch.setattr(render, "FONT_CANDIDATES", (str(latin),))
    monkeypatch.setattr(shutil, "which", which)  # the module render calls
    clear_font_cache()
    try:
        for _ in range(3):
            with pytest.raises(FontMissingError):
                find_cjk_font(None)
        assert calls == ["fc-match"]  # looked for once, not once per poster request
    finally:
        clear_font_cache()
