"""The console over the other parts of issue 15/18 (real store, real HTTP to the WeCom
stand-in, the real embedding model where the bot must be confident enough to answer):

1. the group settings form writes the bot's own per-group settings — what
   `GET /v1/groups/{id}/settings` answers and what the replier obeys;
2. "tag them in WeCom" runs the tag write-back (bot/tags.py) for a segment and shows its
   report; without WeCom it says so (409), and the API maps NotConfiguredError to 409;
3. the member page shows the person's linked ids (nlp/identity.py) and its merged profile.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.errors import status_of
from app.main import create_app
from app.services import Services, build_services
from bot.tags import NotConfiguredError
from models.messages import ChatMessage
from nlp.embed import CachedEmbedder, load_embedder
from tests.app.conftest import LOOPBACK
from tests.app.test_console import ADMIN, OPERATOR, sign_in
from tests.bot.fake_wecom import FakeWeCom
from tests.bot.support import bot_settings, drain, load_demo_catalog, wecom_app_config
from tests.conftest import API_KEY, make_settings

H = {"X-API-Key": API_KEY}
NOON = 1764216000  # 2025-11-27 12:00 Beijing: outside the global quiet hours (22–8)
GROUP, OTHER = "g-muying-01", "g-beauty-01"
ASK = "@名片助手 宝宝六个月了，米粉推荐哪个？"  # a question the recommender is confident about
CARD = {"staff_id": "staff-lin", "name": "林小美", "title": "母婴顾问", "company": "好孕母婴",
        "provider_id": "sh-01"}


def _accounts(services: Services) -> None:
    services.console.users.add(ADMIN[0], role="admin", password=ADMIN[1])
    services.console.users.add(OPERATOR[0], role="operator", password=OPERATOR[1])


# ------------------------------------------------------------------ 1. group settings


@pytest.fixture(scope="module")
def use_embedder() -> CachedEmbedder:
    """The real model: the bot answers only when it is confident, which a stand-in is not."""
    return load_embedder("use")


@pytest.fixture
def bot(backend: str, fake: FakeWeCom, tmp_path: Path, request: pytest.FixtureRequest,
        use_embedder: CachedEmbedder) -> Iterator[tuple[TestClient, Services]]:
    redis_url = request.getfixturevalue("clean_redis_url") if backend == "redis" else None
    # One reply per group per second (not ten minutes): the test asks one group twice.
    settings = bot_settings(tmp_path / "data", redis_url=redis_url, embedder="use",
                            wecom=wecom_app_config(fake), reply={"min_interval_s": 1})
    services = build_services(settings, embedder=use_embedder)
    try:
        with TestClient(create_app(settings, services=services), client=LOOPBACK) as client:
            load_demo_catalog(services)
            services.bot.replier.clock = lambda: NOON
            _accounts(services)
            yield client, services
    finally:
        services.close()


def _ask(client: TestClient, n: int, group: str) -> None:
    msg = {"msg_id": f"cs{n}", "platform": "wecom", "group_id": group, "user_id": "u-1001",
           "user_name": "小雨妈妈", "text": ASK, "ts": NOON}
    assert client.post("/v1/messages", json=msg, headers=H).json()["accepted"] == 1


def _sends(fake: FakeWeCom, group: str) -> list[str]:
    return [str(r.body["text"]["content"]) for r in fake.sent("/cgi-bin/appchat/send")
            if r.body and r.body["chatid"] == group]


def _api_settings(client: TestClient, group: str = GROUP) -> dict[str, object]:
    r = client.get(f"/v1/groups/{group}/settings", headers=H)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_point1_console_group_settings_are_the_bots(bot: tuple[TestClient, Services],
                                                    fake: FakeWeCom) -> None:
    client, services = bot
    _ask(client, 0, GROUP)  # the group exists in the console once it has talked
    drain(services)
    assert len(_sends(fake, GROUP)) == 1  # replies are on by default: the bot answers here
    card = client.post("/v1/cards", json=CARD, headers=H).json()["id"]
    token = sign_in(client, ADMIN)

    # Replies off, own quiet hours: the API reads what the console wrote.
    form = {"csrf": token, "card_id": "", "replies": "", "quiet_start_hour": "1",
            "quiet_end_hour": "5"}
    r = client.post(f"/console/groups/{GROUP}/settings", data=form, follow_redirects=False)
    assert r.status_code == 303
    assert _api_settings(client) == {"group_id": GROUP, "configured": True, "card_id": None,
                                     "reply_enabled": False,
                                     "quiet_hours": {"start_hour": 1, "end_hour": 5}}
    page = client.get(f"/console/groups/{GROUP}").text
    assert "本群已单独设置" in page and 'value="1"' in page
    assert "机器人还没有在这个群回复过" not in page  # the first answer is listed
    assert 'name="replies" value="on" checked' not in page
    # ... and the bot obeys: no reply in this group, while another group still gets one.
    time.sleep(1.1)  # past the reply interval: only the settings can keep the bot quiet
    _ask(client, 1, GROUP)
    _ask(client, 2, OTHER)
    drain(services)
    assert len(_sends(fake, GROUP)) == 1  # still only the first answer
    assert len(_sends(fake, OTHER)) == 1

    # Replies on again, linked through the card, global quiet hours (blank fields).
    form = {"csrf": token, "card_id": card, "replies": "on", "quiet_start_hour": "",
            "quiet_end_hour": ""}
    assert client.post(f"/console/groups/{GROUP}/settings", data=form,
                       follow_redirects=False).status_code == 303
    assert _api_settings(client) == {"group_id": GROUP, "configured": True, "card_id": card,
                                     "reply_enabled": True, "quiet_hours": None}
    time.sleep(1.1)  # past the reply interval
    _ask(client, 3, GROUP)
    drain(services)
    sends = _sends(fake, GROUP)
    assert len(sends) == 2 and "/s/" in sends[-1]  # the card's share page ends the reply

    # The other way round: what the API writes, the console shows.
    r = client.put(f"/v1/groups/{OTHER}/settings", headers=H,
                   json={"reply_enabled": False, "quiet_hours": {"start_hour": 23,
                                                                 "end_hour": 6}})
    assert r.status_code == 200
    page = client.get(f"/console/groups/{OTHER}").text
    assert 'value="23"' in page and 'value="6"' in page
    assert 'name="replies" value="on" checked' not in page
    # The audit log says who changed what; no console-only copy of the settings exists.
    audit = client.get("/console/audit").text
    assert "group.settings" in audit and "replies=off quiet=1-5" in audit
    assert services.store.count("console.group") == 0


# ------------------------------------------------------------------ 2. WeCom tags


def _talk(services: Services, user: str, text: str, n: int) -> None:
    services.pipeline.process([ChatMessage(
        msg_id=f"wt{n}", platform="wecom", group_id=GROUP, user_id=user, user_name=None,
        text=text, ts=int(time.time()) - 60 + n)])


@pytest.fixture
def wecom(tmp_path: Path, fake: FakeWeCom) -> Iterator[tuple[TestClient, Services]]:
    settings = make_settings(tmp_path / "data", wecom=wecom_app_config(fake), embedder="hash",
                             embedded_worker=False, tags={"min_interval_s": 0})
    services = build_services(settings)
    try:
        with TestClient(create_app(settings, services=services), client=LOOPBACK) as client:
            _accounts(services)
            yield client, services
    finally:
        services.close()


def test_point2_tag_them_in_wecom_runs_the_write_back(wecom: tuple[TestClient, Services],
                                                      fake: FakeWeCom) -> None:
    client, services = wecom
    c = fake.contacts
    for ext in ("wmA", "wmB"):
        c.add_contact(ext, follow="lifang")
    _talk(services, "wmA", "宝宝六个月了，辅食先加什么好？", 1)
    # wmA signs in on a card page as mall user m-7: one person, listed as m-7 from now on.
    services.identities.link("m-7", [("wecom_external", "wmA")])
    _talk(services, "wmA", "辅食加了米粉，娃不爱吃", 2)
    _talk(services, "wmB", "辅食泥自己做还是买现成的", 3)
    services.customers.consent.record("wmA", agree=True, at=time.time())  # wmB never agreed
    seg = client.get("/console/segments", params={"tag": "辅食添加", "days": 30})
    assert "wmA" not in seg.text  # signed out: the login page
    token = sign_in(client, ADMIN)
    page = client.get("/console/segments", params={"tag": "辅食添加", "days": 30}).text
    assert "m-7" in page and "wmB" in page and "在企业微信中打标签" in page
    form = {"csrf": token, "tag": "辅食添加", "days": "30", "min_weight": "0"}

    dry = client.post("/console/segments/wecom-tags", data={**form, "dry_run": "1"})
    assert dry.status_code == 200, dry.text
    assert "将会更改" in dry.text and "wmA" in dry.text and "lifang" in dry.text
    assert [r.path for r in fake.sent() if r.path.endswith(("mark_tag", "add_corp_tag"))] == []
    assert c.tags_of("wmA", "lifang") == set()

    done = client.post("/console/segments/wecom-tags", data=form)
    assert done.status_code == 200 and "已更改" in done.text
    assert "辅食添加" in c.tags_of("wmA", "lifang")
    assert c.tags_of("wmB", "lifang") == set()  # no consent: nothing written
    audit = [e for _, e in services.store.read_log("console.audit")]
    assert [e["action"] for e in audit[-2:]] == ["segment.wecom_tags.dry_run",
                                                 "segment.wecom_tags"]
    assert "1 changed" in audit[-1]["detail"] and audit[-1]["who"] == ADMIN[0]

    # Operators may not run it; a missing CSRF token is refused.
    client.cookies.clear()
    op = sign_in(client, OPERATOR)
    r = client.post("/console/segments/wecom-tags", data={**form, "csrf": op})
    assert r.status_code == 403
    assert client.post("/console/segments/wecom-tags",
                       data={k: v for k, v in form.items() if k != "csrf"}).status_code == 403


def test_point2_without_wecom_the_console_says_so(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", embedder="hash", embedded_worker=False)
    services = build_services(settings)
    try:
        with TestClient(create_app(settings, services=services), client=LOOPBACK) as client:
            _accounts(services)
            _talk(services, "u-1", "宝宝六个月了，辅食先加什么好？", 1)
            token = sign_in(client, ADMIN)
            page = client.get("/console/segments", params={"tag": "辅食添加"}).text
            assert "u-1" in page and "未配置企业微信" in page
            assert "/console/segments/wecom-tags" not in page  # no button
            r = client.post("/console/segments/wecom-tags",
                            data={"csrf": token, "tag": "辅食添加", "days": "30"})
            assert r.status_code == 409 and "MINGPIAN_WECOM__SECRET" in r.text
    finally:
        services.close()
    # Should it reach the JSON API, it is a 409 with its code, not a 500.
    assert status_of(NotConfiguredError("WeCom is not configured")) == 409


# ------------------------------------------------------------------ 3. linked ids


def test_point3_member_page_shows_linked_ids_and_the_persons_profile(
        tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", embedder="hash", embedded_worker=False)
    services = build_services(settings)
    try:
        with TestClient(create_app(settings, services=services), client=LOOPBACK) as client:
            _accounts(services)
            _talk(services, "wmA", "宝宝六个月了，辅食先加什么好？", 1)
            services.pipeline.process([ChatMessage(
                msg_id="wt2", platform="wecom", group_id=GROUP, user_id="wmA",
                user_name="小雨妈妈", text="辅食加了米粉，娃不爱吃", ts=int(time.time()))])
            services.identities.link("mall-9", [("wecom_external", "wmA"),
                                                ("wechat_openid", "oX-1")])
            sign_in(client, ADMIN)
            person = client.get("/console/members/mall-9").text
            for shown in ("企业微信客户", "wmA", "公众号 openid", "oX-1", "商城账号", "（主 ID）",
                          "辅食添加", "小雨妈妈"):
                assert shown in person, shown
            assert "没有关联的其他平台账号" not in person
            raw = client.get("/console/members/wmA").text
            assert "已关联到" in raw and "mall-9" in raw and "辅食添加" in raw
            found = client.get("/console/members", params={"q": "oX-1"}, follow_redirects=False)
            assert found.status_code == 303
            assert found.headers["location"] == "/console/members/oX-1"
            lone = client.get("/console/members/u-nobody").text
            assert "没有关联的其他平台账号" in lone
            # Segments list the person (whose profile holds the tag now), once.
            seg = client.get("/console/segments", params={"tag": "辅食添加"}).text
            assert "/console/members/mall-9" in seg and "/console/members/wmA" not in seg
            _talk(services, "wmA", "辅食泥自己做还是买现成的", 3)  # indexed under the person
            seg = client.get("/console/segments", params={"tag": "辅食添加"}).text
            assert seg.count('href="/console/members/mall-9"') == 1
    finally:
        services.close()
