"""Cards over HTTP (CONTRACTS §6): create, page, poster, share codes, visits, redirects."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.settings import Settings
from tests.app.cards_env import Env, catalog_item, running, seed_catalog

CARD = {"staff_id": "staff-1", "name": "王小明", "title": "母婴顾问", "company": "上海好孕母婴",
        "phone": "138-0013-8000", "bio": "十年母婴经验", "provider_id": "sh-01",
        "wecom_user_id": "wangxm"}


@pytest.fixture
def env(settings: Settings) -> Iterator[Env]:
    with running(settings) as e:
        seed_catalog(e.services, [
            catalog_item("sku-1", "有机高铁米粉 6月+", "https://mall.example.com/p/sku-1?from=x"),
            catalog_item("sku-off", "下架商品", "https://mall.example.com/p/off", active=False),
        ])
        yield e


def _card(env: Env) -> str:
    r = env.post("/v1/cards", CARD)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _as_viewer(env: Env, user_id: str, path: str) -> Any:
    """Open path as the member the mall vouches for (a fresh browser: no earlier cookies)."""
    token = env.post("/v1/viewer-tokens", {"user_id": user_id, "ttl_s": 3600}).json()["token"]
    env.client.cookies.clear()
    return env.client.get(f"{path}?vt={token}")


def test_create_card_returns_id_urls_and_normalised_phone(env: Env) -> None:
    r = env.post("/v1/cards", CARD)
    body = r.json()
    assert r.status_code == 201 and body["id"] and body["version"] == 1
    assert body["phone"] == "13800138000"
    assert body["url"].endswith(f"/c/{body['id']}")
    assert env.get(f"/v1/cards/{body['id']}").json()["name"] == "王小明"


@pytest.mark.parametrize("bad", [
    {"phone": "call me"}, {"phone": "12"}, {"avatar_url": "javascript:alert(1)"},
    {"avatar_url": "ftp://x/y.png"}, {"avatar_url": "data:image/png;base64,AA"},
    {"name": ""}, {"staff_id": "has space"}, {"unknown_field": 1},
])
def test_create_card_refuses_invalid_fields(env: Env, bad: dict[str, object]) -> None:
    r = env.post("/v1/cards", CARD | bad)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid"


def test_cards_api_needs_a_key(env: Env) -> None:
    assert env.client.post("/v1/cards", json=CARD).status_code == 401


def test_card_page_shows_the_salesperson_and_popular_items(env: Env) -> None:
    card_id = _card(env)
    r = env.client.get(f"/c/{card_id}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "王小明" in r.text and "上海好孕母婴" in r.text and 'href="tel:13800138000"' in r.text
    assert "有机高铁米粉" in r.text and "下架商品" not in r.text
    assert "/r/" in r.text and "default-src 'none'" in r.headers["content-security-policy"]
    assert env.client.get("/c/nope").status_code == 404


def test_share_code_is_stable_and_opening_it_records_one_visit_a_day(env: Env) -> None:
    card_id = _card(env)
    share = env.post(f"/v1/cards/{card_id}/shares", {"sharer_id": "u-1"})
    assert share.status_code == 201
    code = share.json()["code"]
    assert len(code) <= 32 and share.json()["url"].endswith(f"/s/{code}")
    assert env.post(f"/v1/cards/{card_id}/shares", {"sharer_id": "u-1"}).json()["code"] == code
    first = env.client.get(f"/s/{code}")
    assert first.status_code == 200 and "王小明" in first.text
    assert "mp_vid" in first.cookies
    env.client.get(f"/s/{code}")  # same visitor (cookie), same day
    env.client.cookies.clear()
    env.client.get(f"/s/{code}", headers={"User-Agent": "another phone"})
    visits = env.get(f"/v1/cards/{card_id}/visits").json()
    assert visits["opens"] == 2 and visits["visitors"] == 2
    env.clock.advance(86_400)
    env.client.get(f"/s/{code}")
    assert env.get(f"/v1/cards/{card_id}/visits").json()["opens"] == 3


def test_known_viewer_from_a_token_is_remembered(env: Env) -> None:
    card_id = _card(env)
    code = env.post(f"/v1/cards/{card_id}/shares", {"sharer_id": "u-1"}).json()["code"]
    r = _as_viewer(env, "u-42", f"/s/{code}")
    assert r.status_code == 200 and r.url.path == f"/s/{code}" and "vt=" not in str(r.url)
    assert "u-42" not in r.text and "mp_vid" in env.client.cookies
    [visit] = env.get(f"/v1/cards/{card_id}/visits").json()["visits"]
    assert visit["visitor_id"] == "u-42" and visit["sharer_id"] == "u-1"


def test_item_link_records_the_click_and_redirects_to_the_mall_with_ref(env: Env) -> None:
    card_id = _card(env)
    code = env.post(f"/v1/cards/{card_id}/shares", {"sharer_id": "u-1"}).json()["code"]
    env.client.get(f"/s/{code}")
    r = env.client.get(f"/r/{code}/sku-1", follow_redirects=False)
    assert r.status_code == 302
    assert r.headers["location"] == f"https://mall.example.com/p/sku-1?from=x&ref={code}"
    [visit] = env.get(f"/v1/cards/{card_id}/visits").json()["visits"]
    assert [c["item_id"] for c in visit["clicks"]] == ["sku-1"]


@pytest.mark.parametrize("path", [
    "/r/{code}/unknown-item", "/r/{code}/sku-off", "/r/AAAAAAAAAAAAAAAAAAAAAA/sku-1",
    "/r/{code}/https:%2F%2Fevil.example.com", "/r/{code}/sku-1%2F..%2F..",
])
def test_no_open_redirect(env: Env, path: str) -> None:
    card_id = _card(env)
    code = env.post(f"/v1/cards/{card_id}/shares", {"sharer_id": "u-1"}).json()["code"]
    r = env.client.get(path.format(code=code) + "?url=https://evil.example.com",
                       follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers


def test_unknown_share_code_is_404(env: Env) -> None:
    assert env.client.get("/s/AAAAAAAAAAAAAAAAAAAAAA").status_code == 404
    assert env.client.get("/s/<script>").status_code == 404


def test_poster_is_a_750px_png_cached_until_the_card_changes(env: Env, tmp_path: Path) -> None:
    card_id = _card(env)
    r = env.client.get(f"/c/{card_id}/poster.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.width == 750
    again = env.client.get(f"/c/{card_id}/poster.png")
    assert again.content == r.content
    assert env.client.patch(f"/v1/cards/{card_id}", json={"name": "王大明"},
                            headers={"X-API-Key": "test-key"}).json()["version"] == 2
    changed = env.client.get(f"/c/{card_id}/poster.png")
    assert changed.content != r.content
    out = Path(__file__).resolve().parents[1] / "artifacts"
    out.mkdir(exist_ok=True)
    (out / f"poster-{env.services.store.backend}.png").write_bytes(changed.content)


def test_visits_of_unknown_card_is_404(env: Env) -> None:
    assert env.get("/v1/cards/nope/visits").status_code == 404


def test_erasing_a_user_removes_its_visits_and_clicks(env: Env) -> None:
    card_id = _card(env)
    code = env.post(f"/v1/cards/{card_id}/shares", {"sharer_id": "u-1"}).json()["code"]
    _as_viewer(env, "u-42", f"/s/{code}")
    env.client.get(f"/r/{code}/sku-1", follow_redirects=False)
    _as_viewer(env, "u-43", f"/s/{code}")
    r = env.client.delete("/v1/users/u-42", headers={"X-API-Key": "test-key"})
    assert r.status_code == 200 and "cards" in r.json()["erased"]
    visits = env.get(f"/v1/cards/{card_id}/visits").json()
    assert [v["visitor_id"] for v in visits["visits"]] == ["u-43"] and visits["clicks"] == 0


def test_items_a_viewer_bought_are_not_recommended_again(env: Env) -> None:
    card_id = _card(env)
    code = env.post(f"/v1/cards/{card_id}/shares", {"sharer_id": "u-1"}).json()["code"]
    assert "有机高铁米粉" in _as_viewer(env, "u-42", f"/s/{code}").text
    r = env.post("/v1/orders", {"order_id": "o-1", "user_id": "u-42", "status": "completed",
                                "amount_cents": 6900, "ts": 1_764_000_000,
                                "items": [{"item_id": "sku-1", "amount_cents": 6900}]})
    assert r.status_code == 200
    assert "有机高铁米粉" not in _as_viewer(env, "u-42", f"/s/{code}").text
    assert "有机高铁米粉" in _as_viewer(env, "u-43", f"/s/{code}").text
