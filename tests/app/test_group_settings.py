"""Per-group settings (issue 15 point 5): the card a group's replies link, replies on/off
and quiet hours per group; reply links go through the card's share code, so a click is on
the salesperson's radar and the order that follows binds to them. End to end through the
public routes, the worker and the WeCom stand-in's send API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services import Services, build_services
from nlp.embed import CachedEmbedder, load_embedder
from tests.app.conftest import LOOPBACK
from tests.bot.fake_wecom import FakeWeCom
from tests.bot.support import bot_settings, drain, load_demo_catalog, wecom_app_config
from tests.conftest import API_KEY

H = {"X-API-Key": API_KEY}
GLOBAL_CARD = "http://127.0.0.1:8000/c/global-card"
NOON = 1764216000  # 2025-11-27 12:00 Beijing
GROUP = "g-muying-01"
ASK = "@名片助手 宝宝六个月了，米粉推荐哪个？"  # a question the recommender is confident about
CARD = {"staff_id": "staff-lin", "name": "林小美", "title": "母婴顾问", "company": "好孕母婴",
        "phone": "138-0013-8000", "bio": "十年母婴经验", "provider_id": "sh-01",
        "wecom_user_id": "linxm"}


@pytest.fixture(scope="module")
def use_embedder() -> CachedEmbedder:
    """The real model: the bot answers only when it is confident, which a stand-in is not."""
    return load_embedder("use")


@pytest.fixture
def bot(backend: str, fake: FakeWeCom, tmp_path: Path, request: pytest.FixtureRequest,
        use_embedder: CachedEmbedder) -> Iterator[tuple[TestClient, Services]]:
    redis_url = request.getfixturevalue("clean_redis_url") if backend == "redis" else None
    settings = bot_settings(tmp_path / "data", redis_url=redis_url, embedder="use",
                            wecom=wecom_app_config(fake), reply={"card_url": GLOBAL_CARD})
    services = build_services(settings, embedder=use_embedder)
    try:
        with TestClient(create_app(settings, services=services), client=LOOPBACK) as client:
            load_demo_catalog(services)
            services.bot.replier.clock = lambda: NOON
            yield client, services
    finally:
        services.close()


def _card(client: TestClient) -> str:
    r = client.post("/v1/cards", json=CARD, headers=H)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _say(client: TestClient, n: int, text: str, *, group: str = GROUP,
         user: str = "u-1001") -> None:
    msg = {"msg_id": f"gs{n}", "platform": "wecom", "group_id": group, "user_id": user,
           "user_name": "小雨妈妈", "text": text, "ts": NOON}
    r = client.post("/v1/messages", json=msg, headers=H)
    assert r.json()["accepted"] == 1, r.text


def _sends(fake: FakeWeCom, group: str = GROUP) -> list[str]:
    return [str(r.body["text"]["content"]) for r in fake.sent("/cgi-bin/appchat/send")
            if r.body and r.body["chatid"] == group]


def _put(client: TestClient, body: dict[str, Any], group: str = GROUP) -> Any:
    return client.put(f"/v1/groups/{group}/settings", json=body, headers=H)


def test_point5_settings_are_stored_and_read_back(bot: tuple[TestClient, Services]) -> None:
    client, _ = bot
    r = client.get(f"/v1/groups/{GROUP}/settings", headers=H)
    assert r.status_code == 200
    assert r.json() == {"group_id": GROUP, "configured": False, "card_id": None,
                        "reply_enabled": True, "quiet_hours": None}
    card_id = _card(client)
    body = {"card_id": card_id, "reply_enabled": False,
            "quiet_hours": {"start_hour": 21, "end_hour": 7}}
    assert _put(client, body).status_code == 200
    got = client.get(f"/v1/groups/{GROUP}/settings", headers=H).json()
    assert got == {"group_id": GROUP, "configured": True, **body}
    assert client.delete(f"/v1/groups/{GROUP}/settings", headers=H).json()["configured"] is False
    assert client.get(f"/v1/groups/{GROUP}/settings", headers=H).json()["configured"] is False


@pytest.mark.parametrize("body", [
    {"card_id": "no-such-card"},
    {"quiet_hours": {"start_hour": 24, "end_hour": 7}},
    {"quiet_hours": {"start_hour": 22}},
    {"reply_enabled": "sometimes"},
    {"card_id": "has space"},
    {"colour": "red"},
])
def test_point5_bad_settings_are_a_clear_4xx(bot: tuple[TestClient, Services],
                                             body: dict[str, Any]) -> None:
    client, _ = bot
    r = _put(client, body)
    assert r.status_code in (404, 422), r.text
    assert "error" in r.json() or "detail" in r.json()
    assert client.get(f"/v1/groups/{GROUP}/settings", headers=H).json()["configured"] is False
    assert client.get("/v1/groups/bad%20id/settings", headers=H).status_code == 422
    assert client.get(f"/v1/groups/{GROUP}/settings").status_code == 401


def test_point5_reply_links_through_the_card_and_the_order_binds(
        bot: tuple[TestClient, Services], fake: FakeWeCom) -> None:
    """Group message → the reply's items are /r/{code}/{item} links of the group's card →
    a tap is recorded on the radar and redirects to the mall with ref → the order webhook
    with that ref binds the buyer to the card's salesperson."""
    client, _services = bot
    services = _services
    card_id = _card(client)
    assert _put(client, {"card_id": card_id}).status_code == 200
    _say(client, 1, ASK)
    drain(services)
    [text] = _sends(fake)
    assert "mall.example.com" not in text  # no bare mall links: nobody would be credited
    assert GLOBAL_CARD not in text
    links = re.findall(r"http://127\.0\.0\.1:8000/r/([A-Za-z0-9]+)/([A-Za-z0-9_.:-]+)", text)
    assert 1 <= len(links) <= 3
    code = links[0][0]
    assert {c for c, _ in links} == {code}
    assert f"http://127.0.0.1:8000/s/{code}" in text
    share = services.cards.shares.resolve(code)
    assert share is not None and share.card_id == card_id and share.sharer_id == "staff-lin"

    item_id = links[0][1]
    r = client.get(f"/r/{code}/{item_id}", follow_redirects=False)
    assert r.status_code == 302
    target = urlsplit(r.headers["location"])
    assert target.netloc == "mall.example.com"
    assert parse_qs(target.query)["ref"] == [code]
    radar = client.get(f"/v1/cards/{card_id}/visits", headers=H).json()
    assert radar["clicks"] == 1
    assert [c["item_id"] for v in radar["visits"] for c in v["clicks"]] == [item_id]

    order = {"order_id": "o-gs-1", "user_id": "mall-77", "status": "paid",
             "amount_cents": 6900, "items": [{"item_id": item_id, "amount_cents": 6900}],
             "ref_code": code, "ts": NOON}
    assert client.post("/v1/orders", json=order, headers=H).status_code == 200
    assert client.get("/v1/referrals/mall-77", headers=H).json()["referrer"] == "staff-lin"


def test_point5_reply_enabled_false_silences_only_that_group(
        bot: tuple[TestClient, Services], fake: FakeWeCom) -> None:
    client, services = bot
    assert _put(client, {"reply_enabled": False}).status_code == 200
    _say(client, 1, ASK)
    _say(client, 2, "@名片助手 推荐个防晒", group="g-beauty-01")
    drain(services)
    assert _sends(fake) == []
    [other] = _sends(fake, "g-beauty-01")
    assert GLOBAL_CARD in other  # a group without settings keeps the global card link


def test_point5_group_quiet_hours_replace_the_global_ones(
        bot: tuple[TestClient, Services], fake: FakeWeCom) -> None:
    client, services = bot
    # Noon is outside the global quiet hours (22–8) but inside this group's (11–13).
    assert _put(client, {"quiet_hours": {"start_hour": 11, "end_hour": 13}}).status_code == 200
    assert _put(client, {"quiet_hours": {"start_hour": 0, "end_hour": 0}},
                group="g-night").status_code == 200
    services.bot.replier.clock = lambda: NOON
    _say(client, 1, ASK)
    drain(services)
    assert _sends(fake) == []
    # 23:00: quiet everywhere by the global hours, but g-night is never quiet.
    services.bot.replier.clock = lambda: NOON + 11 * 3600
    _say(client, 2, ASK, group="g-night")
    _say(client, 3, "@名片助手 推荐个防晒", group="g-beauty-01")
    drain(services)
    assert len(_sends(fake, "g-night")) == 1
    assert _sends(fake, "g-beauty-01") == []
