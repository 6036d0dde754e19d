"""Issue 11, points 3, 4, 5 and 7 (cookie, CSP) over HTTP: the public card surface.

3: a viewer is named only by a signed, expiring token (never by `?u=` or a hand-made
cookie), and public pages print no chat-derived reason. 4: public pages are rate-limited
per client, a visitor counts once per code per day, a click raises popularity once, and
the radar pages. 5: posters are keyed on the card version, not on popularity. 7: the
visitor cookie is Secure on https, and the page's script runs by CSP nonce.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.settings import Settings
from cards.service import FilePosterCache, StorePosterCache
from catalog_sync.loader import demo_catalog_path, import_rows, read_jsonl
from models.messages import ChatMessage
from tests.app.cards_env import Env, catalog_item, running, seed_catalog

CARD = {"staff_id": "staff-1", "name": "王小明", "title": "母婴顾问", "company": "上海好孕母婴",
        "phone": "13800138000", "provider_id": "sh-01", "wecom_user_id": "wangxm"}
ITEMS = [catalog_item(f"sku-{n}", f"商品{n}", f"https://mall.example.com/p/{n}")
         for n in range(1, 5)]
REASON = "因为你最近聊到"


@pytest.fixture
def env(settings: Settings) -> Iterator[Env]:
    with running(settings) as e:
        seed_catalog(e.services, ITEMS)
        yield e


def _card_and_code(env: Env) -> tuple[str, str]:
    card_id = str(env.post("/v1/cards", CARD).json()["id"])
    code = str(env.post(f"/v1/cards/{card_id}/shares", {"sharer_id": "u-1"}).json()["code"])
    return card_id, code


def _token(env: Env, user_id: str, ttl_s: int = 3600) -> str:
    r = env.post("/v1/viewer-tokens", {"user_id": user_id, "ttl_s": ttl_s})
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def _radar(env: Env, card_id: str, **params: Any) -> dict[str, Any]:
    r = env.get(f"/v1/cards/{card_id}/visits", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


# --------------------------------------------------------------------------- point 3


def test_point3_unsigned_u_is_ignored(env: Env) -> None:
    card_id, code = _card_and_code(env)
    r = env.client.get(f"/s/{code}?u=u-42")
    assert r.status_code == 200
    assert r.cookies.get("mp_vid") not in (None, "u-42")  # a cookie, but not naming u-42
    assert "为你推荐" not in r.text and "?u=" not in r.text
    [visit] = _radar(env, card_id)["visits"]
    assert visit["visitor_id"] != "u-42" and visit["visitor_id"].startswith("v:")
    env.client.cookies.clear()
    assert "为你推荐" not in env.client.get(f"/c/{card_id}?u=u-42").text


def test_point3_hand_made_cookie_naming_a_member_is_anonymous(env: Env) -> None:
    card_id, code = _card_and_code(env)
    env.client.cookies.set("mp_vid", "u-42")
    r = env.client.get(f"/s/{code}")
    assert r.status_code == 200 and "为你推荐" not in r.text
    [visit] = _radar(env, card_id)["visits"]
    assert visit["visitor_id"].startswith("v:")


def test_point3_viewer_token_redirects_to_a_signed_cookie(env: Env) -> None:
    card_id, code = _card_and_code(env)
    token = _token(env, "u-42")
    r = env.client.get(f"/s/{code}?from=qr&vt={token}", follow_redirects=False)
    assert r.status_code in (302, 303) and r.headers["location"] == f"/s/{code}?from=qr"
    cookie = r.cookies.get("mp_vid")
    assert cookie and "u-42" not in cookie  # signed and encoded, not the bare id
    page = env.client.get(r.headers["location"])
    assert page.status_code == 200 and "为你推荐" in page.text and token not in page.text
    [visit] = _radar(env, card_id)["visits"]
    assert visit["visitor_id"] == "u-42"
    # /c/ accepts it too.
    env.client.cookies.clear()
    r = env.client.get(f"/c/{card_id}?vt={token}", follow_redirects=False)
    assert r.status_code in (302, 303) and r.headers["location"] == f"/c/{card_id}"


def test_point3_tampered_viewer_token_is_anonymous(env: Env) -> None:
    card_id, code = _card_and_code(env)
    token = _token(env, "u-42")
    body, mac = token.split(".")
    flipped = mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB")
    for bad in (f"{body}.{flipped}", token[:-1], "garbage", f"{body}.{body}"):
        env.client.cookies.clear()
        r = env.client.get(f"/s/{code}?vt={bad}", follow_redirects=False)
        assert r.status_code in (302, 303) and "mp_vid" not in r.cookies
        assert "为你推荐" not in env.client.get(r.headers["location"]).text
    visits = _radar(env, card_id)["visits"]
    assert visits and all(v["visitor_id"].startswith("v:") for v in visits)


def test_point3_expired_viewer_token_is_anonymous(env: Env) -> None:
    card_id, code = _card_and_code(env)
    token = _token(env, "u-42", ttl_s=60)
    env.clock.advance(61)
    r = env.client.get(f"/s/{code}?vt={token}")
    assert r.status_code == 200 and "为你推荐" not in r.text
    [visit] = _radar(env, card_id)["visits"]  # recorded, as an anonymous visitor
    assert visit["visitor_id"].startswith("v:")


def test_point3_member_cookie_expires_with_its_token(env: Env) -> None:
    card_id, code = _card_and_code(env)
    env.client.get(f"/s/{code}?vt={_token(env, 'u-42', ttl_s=600)}")
    env.clock.advance(86_400)  # next day, cookie (and token) long expired
    env.client.get(f"/s/{code}")
    visitors = [v["visitor_id"] for v in _radar(env, card_id)["visits"]]
    assert visitors[1] == "u-42" and visitors[0].startswith("v:")


@pytest.mark.parametrize("body", [
    {"user_id": "has space", "ttl_s": 60}, {"user_id": "", "ttl_s": 60},
    {"user_id": "x" * 65, "ttl_s": 60}, {"user_id": "u-1", "ttl_s": 0},
    {"user_id": "u-1", "ttl_s": -5}, {"user_id": "u-1", "ttl_s": "soon"}, {"ttl_s": 60},
    {"user_id": "u-1", "ttl_s": 60, "extra": 1},
])
def test_point3_viewer_token_body_is_validated(env: Env, body: dict[str, Any]) -> None:
    r = env.post("/v1/viewer-tokens", body)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid"


def test_point3_viewer_token_needs_a_key_and_its_ttl_is_capped(env: Env) -> None:
    assert env.client.post("/v1/viewer-tokens", json={"user_id": "u-1", "ttl_s": 60}
                           ).status_code == 401
    r = env.post("/v1/viewer-tokens", {"user_id": "u-1", "ttl_s": 10**9})
    cap = env.services.settings.viewer_token_max_ttl_s
    expected = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(env.clock()) + cap))
    assert r.status_code == 200 and r.json()["expires_at"] == expected


def test_point3_public_page_prints_no_chat_reason(settings: Settings) -> None:
    with running(settings) as env:
        svc = env.services
        import_rows(svc.catalog, read_jsonl(demo_catalog_path()))
        svc.index.refresh()
        texts = ["宝宝六个月了，辅食先加什么好？", "米粉要选高铁的吗", "第一口辅食吃什么比较好",
                 "辅食添加要注意过敏吗"]
        svc.pipeline.process([
            ChatMessage(msg_id=f"m{i}", platform="wecom", group_id="g-muying",
                        user_id="u-1001", text=t, ts=int(time.time()) - 60 + i)
            for i, t in enumerate(texts)])
        api = env.get("/v1/recommendations", params={"user_id": "u-1001", "k": 5,
                                                     "provider_id": "sh-01"}).json()
        assert api["items"][0]["reason"].startswith(REASON)  # the API still explains
        card_id, code = _card_and_code(env)
        for path in (f"/c/{card_id}", f"/s/{code}"):
            env.client.cookies.clear()
            assert REASON not in env.client.get(f"{path}?u=u-1001").text
            env.client.cookies.clear()
            page = env.client.get(f"{path}?vt={_token(env, 'u-1001')}")
            assert page.status_code == 200 and "为你推荐" in page.text  # ordered for them
            assert REASON not in page.text and "「辅食添加」" not in page.text


# --------------------------------------------------------------------------- point 4


def test_point4_burst_of_200_gets_429(env: Env) -> None:
    card_id, code = _card_and_code(env)
    codes = []
    for n in range(200):
        path = f"/s/{code}" if n % 2 else f"/r/{code}/sku-1"
        codes.append(env.client.get(path, follow_redirects=False).status_code)
    assert codes.count(429) == 80 and codes[:120].count(429) == 0
    r = env.client.get(f"/c/{card_id}/poster.png")
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert int(r.headers["retry-after"]) >= 1
    radar = _radar(env, card_id)
    assert radar["opens"] == 1 and radar["clicks"] == 1 and len(radar["visits"]) == 1


def test_point4_limit_is_per_client_behind_trusted_proxies(settings: Settings) -> None:
    s = settings.model_copy(update={"public_rate_limit": "3/minute",
                                    "trusted_proxies": "10.0.0.0/8"})
    with running(s) as env:
        card_id = str(env.post("/v1/cards", CARD).json()["id"])
        app = env.client.app

        def get(c: TestClient, xff: str | None) -> int:
            headers = {"X-Forwarded-For": xff} if xff else {}
            return c.get(f"/c/{card_id}", headers=headers).status_code

        with TestClient(app, client=("10.0.0.7", 4000)) as proxy:
            # Behind our proxy the right-most untrusted address is the client.
            assert [get(proxy, "198.51.100.1, 10.0.0.3") for _ in range(4)] == [200] * 3 + [429]
            assert get(proxy, "198.51.100.2") == 200
            # A spoofed left-most entry does not make a new client.
            assert get(proxy, "1.2.3.4, 198.51.100.1") == 429
        with TestClient(app, client=("203.0.113.9", 4000)) as direct:
            # An untrusted peer's X-Forwarded-For is not believed.
            assert [get(direct, f"192.0.2.{n}") for n in range(4)] == [200] * 3 + [429]


def test_point4_visitor_counts_once_per_code_per_day(env: Env) -> None:
    card_id, code = _card_and_code(env)
    for _ in range(5):  # a client that drops its cookies is still one visitor
        env.client.cookies.clear()
        assert env.client.get(f"/s/{code}").status_code == 200
    assert _radar(env, card_id)["opens"] == 1
    env.client.cookies.clear()
    env.client.get(f"/s/{code}", headers={"User-Agent": "another phone"})
    assert _radar(env, card_id)["opens"] == 2
    env.clock.advance(86_400)
    env.client.get(f"/s/{code}", headers={"User-Agent": "another phone"})
    assert _radar(env, card_id)["opens"] == 3


def test_point4_click_raises_popularity_once(env: Env) -> None:
    card_id, code = _card_and_code(env)
    rec = env.services.recommender
    assert rec is not None
    before = rec.signals.events("sku-1")["click"]
    for n in range(6):
        if n % 2:
            env.client.cookies.clear()
        r = env.client.get(f"/r/{code}/sku-1", follow_redirects=False)
        assert r.status_code == 302
    assert rec.signals.events("sku-1")["click"] == before + 1
    assert _radar(env, card_id)["clicks"] == 1
    env.client.get(f"/r/{code}/sku-2", follow_redirects=False)
    env.clock.advance(86_400)
    env.client.get(f"/r/{code}/sku-1", follow_redirects=False)
    assert rec.signals.events("sku-1")["click"] == before + 2
    assert rec.signals.events("sku-2")["click"] == 1


def test_point4_radar_pages_with_a_cursor(env: Env) -> None:
    card_id, code = _card_and_code(env)
    for n in range(5):
        env.client.cookies.clear()
        env.client.get(f"/s/{code}", headers={"User-Agent": f"phone {n}"})
        env.clock.advance(10)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = _radar(env, card_id, **params)
        assert page["visitors"] == 5 and page["opens"] == 5 and page["card_id"] == card_id
        seen += [v["visitor_id"] for v in page["visits"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == len(set(seen)) == 5
    everything = _radar(env, card_id)
    assert [v["visitor_id"] for v in everything["visits"]] == seen  # latest first, same order
    assert everything["next_cursor"] is None
    assert env.get(f"/v1/cards/{card_id}/visits", params={"cursor": "!!"}).status_code == 422
    assert env.get(f"/v1/cards/{card_id}/visits", params={"limit": 0}).status_code == 422


def test_point4_visits_expire_after_the_retention(env: Env) -> None:
    card_id, code = _card_and_code(env)
    env.client.get(f"/s/{code}")
    days = env.services.settings.visit_retention_days
    env.clock.advance((days + 1) * 86_400)
    assert _radar(env, card_id)["visits"] == []
    cards = env.services.cards
    assert cards is not None and cards.purge_visits() == 1 and cards.purge_visits() == 0


# --------------------------------------------------------------------------- point 5


def _top3(env: Env) -> list[str]:
    rec = env.services.recommender
    assert rec is not None
    return [i.id for i in rec.for_user("", k=3, provider_id="sh-01").items]


def test_point5_popularity_change_does_not_rerender_poster(env: Env) -> None:
    card_id = str(env.post("/v1/cards", CARD).json()["id"])
    first = env.client.get(f"/c/{card_id}/poster.png")
    assert first.status_code == 200
    rec = env.services.recommender
    assert rec is not None
    [left_out] = [i["id"] for i in ITEMS if i["id"] not in _top3(env)]
    # The ranking is cached for a moment (monotonic time, no clock to move): no cache here.
    rec.signals.ttl_s = 0.0
    for _ in range(5):
        rec.record_click(left_out, provider_id="sh-01")
    assert left_out in _top3(env), "the clicks never reached the popular list"
    env.clock.advance(3600)  # past any refresh of the page's popular items
    again = env.client.get(f"/c/{card_id}/poster.png")
    assert again.status_code == 200 and again.content == first.content


def test_point5_superseded_posters_are_evicted(env: Env) -> None:
    card_id = str(env.post("/v1/cards", CARD).json()["id"])
    cards = env.services.cards
    assert cards is not None
    for n in range(3):
        assert env.client.get(f"/c/{card_id}/poster.png").status_code == 200
        env.client.patch(f"/v1/cards/{card_id}", json={"name": f"王{n}"},
                         headers={"X-API-Key": "test-key"})
    env.client.get(f"/c/{card_id}/poster.png")
    posters = cards.posters
    assert isinstance(posters, FilePosterCache | StorePosterCache)
    assert posters.count() == 1


def test_point5_renders_are_bounded(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from cards import service

    card_id = str(env.post("/v1/cards", CARD).json()["id"])
    cards = env.services.cards
    assert cards is not None
    monkeypatch.setattr(service, "POSTER_RENDER_WAIT_S", 0.01)
    held = [cards._renders.acquire(blocking=False) for _ in range(service.POSTER_RENDERS)]
    assert all(held)
    try:
        r = env.client.get(f"/c/{card_id}/poster.png")
        assert r.status_code == 429 and r.json()["error"]["code"] == "busy"
        assert "retry-after" in r.headers
    finally:
        for _ in held:
            cards._renders.release()
    assert env.client.get(f"/c/{card_id}/poster.png").status_code == 200


# --------------------------------------------------------------------------- point 7


def test_point7_cookie_secure_on_https(settings: Settings) -> None:
    for base, secure in (("https://card.example.com", True), ("http://127.0.0.1:8000", False)):
        with running(settings.model_copy(update={"public_base_url": base})) as env:
            card_id, code = _card_and_code(env)
            for path in (f"/s/{code}", f"/c/{card_id}", f"/s/{code}?vt={_token(env, 'u-9')}"):
                env.client.cookies.clear()
                r = env.client.get(path, follow_redirects=False)
                [set_cookie] = [v for k, v in r.headers.multi_items() if k == "set-cookie"]
                attrs = [a.strip().lower() for a in set_cookie.split(";")]
                assert ("secure" in attrs) is secure, (base, path, set_cookie)
                assert "httponly" in attrs and "samesite=lax" in attrs


def test_point7_csp_nonce(env: Env) -> None:
    card_id, code = _card_and_code(env)
    nonces = []
    for path in (f"/c/{card_id}", f"/s/{code}", f"/c/{card_id}"):
        r = env.client.get(path)
        csp = {d.split()[0]: d.split()[1:] for d in r.headers["content-security-policy"].split(";")
               if d.strip()}
        assert "'unsafe-inline'" not in csp["script-src"]
        [nonce] = [s[len("'nonce-"):-1] for s in csp["script-src"] if s.startswith("'nonce-")]
        scripts = re.findall(r"<script\b[^>]*>", r.text)
        assert scripts and all(f'nonce="{nonce}"' in s for s in scripts)
        nonces.append(nonce)
    assert len(set(nonces)) == 3 and all(len(n) >= 16 for n in nonces)
