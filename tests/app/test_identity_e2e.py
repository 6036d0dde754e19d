"""Issue 15, done when: a person who chats in a customer group (external_userid), opens a
card in WeChat (openid) and buys in the mall (mall id) ends with one profile, one radar
identity and recommendations that use all three; erasing any of the ids erases the person.
Everything through the public routes, the real model and the real worker handler."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.cards import VISITOR_COOKIE
from app.main import create_app
from app.services import Services, build_services
from cards.viewer import Visitor
from nlp.embed import CachedEmbedder, load_embedder
from tests.app.conftest import LOOPBACK
from tests.bot.support import drain, load_demo_catalog
from tests.conftest import API_KEY, make_settings

H = {"X-API-Key": API_KEY}
EXT, OPENID, MALL = "wmEXT-xiaoyu", "oOPEN-xiaoyu", "mall-1001"
CARD = {"staff_id": "staff-lin", "name": "林小美", "title": "母婴顾问", "company": "好孕母婴",
        "phone": "138-0013-8000", "bio": "十年母婴经验", "provider_id": "sh-01",
        "wecom_user_id": "linxm"}
CHAT = ["宝宝六个月了，辅食先加什么好？", "米粉是不是要选高铁的", "辅食添加有什么顺序吗",
        "果泥可以自己做吗", "今天天气真好"]


@pytest.fixture(scope="module")
def use_embedder() -> CachedEmbedder:
    """The real model (tags, profiles and confident answers need it)."""
    return load_embedder("use")


@pytest.fixture
def env(backend: str, tmp_path: Path, request: pytest.FixtureRequest,
        use_embedder: CachedEmbedder) -> Iterator[tuple[TestClient, Services]]:
    redis_url = request.getfixturevalue("clean_redis_url") if backend == "redis" else None
    settings = make_settings(tmp_path / "data", redis_url=redis_url, embedded_worker=False)
    services = build_services(settings, embedder=use_embedder)
    try:
        with TestClient(create_app(settings, services=services), client=LOOPBACK) as client:
            load_demo_catalog(services)
            yield client, services
    finally:
        services.close()


def _chat(client: TestClient, first: int, texts: list[str], user: str = EXT) -> None:
    now = int(time.time()) - 600
    msgs = [{"msg_id": f"e2e-{first + n}", "platform": "wecom", "group_id": "g-muying-01",
             "user_id": user, "user_name": "小雨妈妈", "text": t, "ts": now + n}
            for n, t in enumerate(texts)]
    r = client.post("/v1/messages", json={"messages": msgs}, headers=H)
    assert r.json()["accepted"] == len(texts), r.text


def _profile(client: TestClient, user: str) -> dict[str, Any] | None:
    r = client.get(f"/v1/users/{user}/profile", headers=H)
    assert r.status_code in (200, 404), r.text
    return r.json() if r.status_code == 200 else None


def _weights(profile: dict[str, Any] | None) -> dict[str, float]:
    assert profile is not None
    return {t["tag"]: float(t["weight"]) for t in profile["tags"]}


def _wechat_cookie(services: Services, openid: str) -> str:
    """The signed visitor cookie WeChat sign-in (/oauth/wechat) sets for an openid."""
    visitor = Visitor(openid, known=True, expires_at=int(time.time()) + 3600, openid=openid)
    return services.cards.viewers.cookie_value(visitor)


def _open_card_in_wechat(client: TestClient, services: Services, code: str) -> str:
    """Open a shared card signed in with the openid, tap its first item; return the item
    (the tap counts once in the person's profile, at a tap's weight)."""
    seen = _weights(_profile(client, MALL))
    client.cookies.set(VISITOR_COOKIE, _wechat_cookie(services, OPENID))
    page = client.get(f"/s/{code}")
    assert page.status_code == 200
    tapped = str(re.findall(rf"/r/{code}/([A-Za-z0-9_.:-]+)", page.text)[0])
    for _ in range(2):  # twice: once a day counts
        assert client.get(f"/r/{code}/{tapped}", follow_redirects=False).status_code == 302
    client.cookies.clear()
    tags = [t for t in services.catalog.get_items([tapped])[tapped].tags
            if t in services.tagger.taxonomy][:3]
    assert tags
    after = _weights(_profile(client, MALL))
    for t in tags:
        assert after[t] - seen.get(t, 0.0) == pytest.approx(0.3, abs=2e-3)
    return tapped


def test_done_when_one_person_across_wecom_wechat_and_the_mall(
        env: tuple[TestClient, Services]) -> None:
    client, services = env
    # 1. The customer chats in the group under their WeCom external_userid.
    _chat(client, 0, CHAT[:3])
    drain(services)
    before = _profile(client, EXT)
    assert before is not None and before["message_count"] == 3

    # 2. The mall links its user id to the chat id and the WeChat openid: one person.
    r = client.post("/v1/identities/link", headers=H, json={"user_id": MALL, "ids": [
        {"kind": "wecom_external", "id": EXT}, {"kind": "wechat_openid", "id": OPENID}]})
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == MALL and r.json()["merged"] == [EXT]
    got = client.get(f"/v1/identities/wechat_openid/{OPENID}", headers=H).json()
    assert got["user_id"] == MALL
    assert {(i["kind"], i["id"]) for i in got["ids"]} == {
        ("mall", MALL), ("wecom_external", EXT), ("wechat_openid", OPENID)}
    # Later chat lands on the person too.
    _chat(client, 10, CHAT[3:])
    drain(services)

    # 3. They open the salesperson's card inside WeChat (signed in with their openid) and
    # tap an item.
    card = client.post("/v1/cards", json=CARD, headers=H).json()
    code = client.post(f"/v1/cards/{card['id']}/shares", json={"sharer_id": "staff-lin"},
                       headers=H).json()["code"]
    tapped = _open_card_in_wechat(client, services, code)
    after_tap = _weights(_profile(client, MALL))

    # 4. They buy in the mall, under the mall id, through the card's code.
    bought = "sku-10023"  # 有机高铁米粉 6月+
    order = {"order_id": "o-e2e-1", "user_id": MALL, "status": "paid", "amount_cents": 6900,
             "items": [{"item_id": bought, "amount_cents": 6900}], "ref_code": code}
    assert client.post("/v1/orders", json=order, headers=H).status_code == 200
    assert client.post("/v1/orders", json=order | {"status": "completed"},
                       headers=H).status_code == 200
    after_order = _weights(_profile(client, MALL))
    for t in ("辅食添加", "补铁"):  # the item's tags, at a purchase's weight, once
        assert after_order[t] - after_tap.get(t, 0.0) == pytest.approx(1.0, abs=2e-3)

    # One profile: every id names it; all chat messages counted once; what they did added.
    prof = {u: _profile(client, u) for u in (EXT, OPENID, MALL)}
    assert all(p is not None and p["user_id"] == MALL for p in prof.values())
    person = prof[MALL]
    assert person is not None and person["message_count"] == len(CHAT)
    assert prof[EXT] == prof[OPENID] == person

    # One radar identity: the WeChat visit and tap are the mall id's.
    radar = client.get(f"/v1/cards/{card['id']}/visits", headers=H).json()
    assert {v["visitor_id"] for v in radar["visits"]} == {MALL}
    assert [c["item_id"] for v in radar["visits"] for c in v["clicks"]] == [tapped]
    assert client.get(f"/v1/referrals/{OPENID}", headers=H).json()["referrer"] == "staff-lin"

    # Recommendations from the chat (profile), never the item just bought, for any id.
    recs = {u: client.get("/v1/recommendations", params={"user_id": u, "k": 5},
                          headers=H).json() for u in (EXT, OPENID, MALL)}
    assert recs[EXT] == recs[OPENID] == recs[MALL]
    assert recs[MALL]["strategy"] == "profile"
    ids = [i["id"] for i in recs[MALL]["items"]]
    assert ids and bought not in ids

    # Erasing any one id erases the person: every id, every link.
    r = client.delete(f"/v1/users/{OPENID}", headers=H)
    assert r.status_code == 200 and "identities" in r.json()["erased"]
    assert all(_profile(client, u) is None for u in (EXT, OPENID, MALL))
    assert client.get(f"/v1/identities/wecom_external/{EXT}", headers=H).status_code == 404
    radar = client.get(f"/v1/cards/{card['id']}/visits", headers=H).json()
    assert MALL not in {v["visitor_id"] for v in radar["visits"]}


def test_point1_link_routes_refuse_what_is_wrong(env: tuple[TestClient, Services]) -> None:
    client, _ = env
    ok = {"user_id": "mall-1", "ids": [{"kind": "wecom_external", "id": "wm-1"}]}
    assert client.post("/v1/identities/link", json=ok).status_code == 401
    assert client.post("/v1/identities/link", json=ok, headers=H).status_code == 200
    taken = {"user_id": "mall-2", "ids": [{"kind": "wecom_external", "id": "wm-1"}]}
    r = client.post("/v1/identities/link", json=taken, headers=H)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    for bad in ({"user_id": "mall-2", "ids": []},
                {"user_id": "mall-2", "ids": [{"kind": "qq", "id": "x"}]},
                {"user_id": "has space", "ids": [{"kind": "mall", "id": "x"}]},
                {"user_id": "mall-2", "ids": [{"kind": "mall", "id": "x" * 65}]}):
        assert client.post("/v1/identities/link", json=bad, headers=H).status_code == 422
    assert client.get("/v1/identities/wechat_openid/nobody", headers=H).status_code == 404
    assert client.get("/v1/identities/qq/wm-1", headers=H).status_code == 422
    r = client.delete("/v1/identities/mall/mall-1", headers=H)
    assert r.status_code == 409  # the person's own id, while wm-1 is linked to it
    r = client.delete("/v1/identities/wecom_external/wm-1", headers=H)
    assert r.status_code == 200 and r.json()["ids"] == [{"kind": "mall", "id": "mall-1"}]
    assert client.get("/v1/identities/wecom_external/wm-1", headers=H).status_code == 404
