"""Issue 15 point 4: the salesperson's sidebar, over HTTP, against the WeCom stand-in.

The member is named by WeCom's OAuth (the stand-in's authorize page and auth/getuserinfo);
the JS-SDK page is signed with the agent's jsapi ticket (ticket/get); a customer is shown
only to a member who follows them (externalcontact/get). The browser run of the same flow,
with screenshots, is tests/e2e/test_sidebar_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.settings import Settings
from cards.sidebar import jsapi_signature
from models.messages import ChatMessage
from nlp.tagging import TagHit, TagResult
from tests.app.cards_env import Env, catalog_item, running, seed_catalog
from tests.bot.fake_wecom import FakeWeCom
from tests.bot.support import wecom_app_config
from tests.conftest import make_settings

CHAT_TEXT = "我家宝宝最近辅食老是不吃，手机13812345678"


def _settings(tmp_path: Path, fake: FakeWeCom, *, demo: bool = False) -> Settings:
    wecom = wecom_app_config(fake) | {"oauth_base": fake.url, "jssdk_url": f"{fake.url}/jssdk.js"}
    return make_settings(tmp_path / "data", wecom=wecom, embedder="hash", demo=demo,
                         embedded_worker=False, public_base_url="http://testserver")


@pytest.fixture
def env(tmp_path: Path, fake: FakeWeCom) -> Iterator[Env]:
    fake.contacts.oauth_userid = "lifang"
    fake.contacts.add_contact("wmA", follow="lifang")
    fake.contacts.add_contact("wmB", follow="zhaolei")
    with running(_settings(tmp_path, fake)) as e:
        seed(e)
        yield e


def seed(env: Env) -> str:
    """A card for lifang, items, a profile, a click and a binding for customer wmA."""
    seed_catalog(env.services, [
        catalog_item("sku-1", "有机高铁米粉", "https://mall.example.com/p/1"),
        catalog_item("sku-2", "宝宝睡眠引导课", "https://mall.example.com/c/2", kind="course"),
    ])
    card = env.post("/v1/cards", {"staff_id": "staff-7", "name": "李芳", "title": "母婴顾问",
                                  "wecom_user_id": "lifang", "provider_id": "sh-01"}).json()
    for n in range(3):
        msg = ChatMessage(msg_id=f"side-{n}", user_id="wmA", ts=int(time.time()) - n,
                          text=CHAT_TEXT)
        tags = [TagHit("辅食添加", 0.9)] + ([TagHit("睡眠", 0.8)] if n == 0 else [])
        env.services.profiles.apply(msg=msg, result=TagResult(tags=tags, vector=None,
                                                              contentless=False))
    code = env.post(f"/v1/cards/{card['id']}/shares", {"sharer_id": "staff-7"}).json()["code"]
    token = env.post("/v1/viewer-tokens", {"user_id": "wmA"}).json()["token"]
    env.client.get(f"/s/{code}?vt={token}")
    assert env.client.get(f"/r/{code}/sku-2", follow_redirects=False).status_code == 302
    env.client.cookies.clear()
    assert env.post("/v1/referrals/bind", {"user_id": "wmA", "code": code}).status_code == 200
    return str(card["id"])


def _sign_in(env: Env, fake: FakeWeCom) -> None:
    """Open /sidebar with no session: WeCom's OAuth names the member (a session cookie)."""
    r = env.client.get("/sidebar", follow_redirects=False)
    assert r.status_code == 302
    url = r.headers["location"]
    q = parse_qs(urlsplit(url).query)
    assert url.startswith(f"{fake.url}/connect/oauth2/authorize?appid={fake.corp_id}&")
    assert q["agentid"] == ["1000002"] and q["scope"] == ["snsapi_base"]
    back = httpx.get(url.split("#")[0], follow_redirects=False).headers["location"]
    parts = urlsplit(back)
    r = env.client.get(f"{parts.path}?{parts.query}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/sidebar"


def test_point4_jsapi_signature_matches_the_documented_example() -> None:
    # WeChat JS-SDK documentation, 附录1 (the same algorithm WeCom's agentConfig uses).
    assert jsapi_signature(
        ticket="sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg",
        nonce="Wm3WZYTPz0wzccnW", timestamp=1414587457,
        url="http://mp.weixin.qq.com?params=value#frag",
    ) == "0f9de62fce790f9a083d5c99e95740ceb90c27ed"


def test_point4_member_signs_in_and_the_page_is_signed_with_the_agent_ticket(
        env: Env, fake: FakeWeCom) -> None:
    _sign_in(env, fake)
    page = env.client.get("/sidebar")
    assert page.status_code == 200
    found = re.search(r"c=(\{.*?\});", page.text)
    assert found is not None
    config = json.loads(found.group(1))
    expected = hashlib.sha1(
        f"jsapi_ticket={fake.contacts.jsapi_ticket}&noncestr={config['nonceStr']}"
        f"&timestamp={config['timestamp']}&url=http://testserver/sidebar".encode()).hexdigest()
    assert config["signature"] == expected and config["corpid"] == fake.corp_id
    assert config["agentid"] == "1000002"
    assert "script-src 'nonce-" in page.headers["content-security-policy"]
    assert fake.url in page.headers["content-security-policy"]
    # The ticket is shared like a token: a second page does not fetch another.
    env.client.get("/sidebar")
    assert len([r for r in fake.requests if r.path == "/cgi-bin/ticket/get"]) == 1


def test_point4_shows_interests_recommendations_clicks_and_referral_without_chat_text(
        env: Env, fake: FakeWeCom) -> None:
    _sign_in(env, fake)
    r = env.client.get("/sidebar/customer/wmA")
    assert r.status_code == 200
    text = r.text
    assert "辅食添加" in text and "3条" in text  # evidence: three messages showed it
    assert "睡眠" in text and "1条" in text
    assert CHAT_TEXT not in text and "13812345678" not in text and "不吃" not in text
    assert "宝宝睡眠引导课" in text  # tapped on the card
    links = re.findall(r'data-url="([^"]+)"', text)
    assert links and all(re.match(r"^http://testserver/r/[A-Za-z0-9]+/sku-\d$", u) for u in links)
    assert "staff-7" in text  # the referrer the binding named
    # Another member's customer is not shown to lifang.
    assert env.client.get("/sidebar/customer/wmB").status_code == 403
    # Without a session: 401.
    env.client.cookies.clear()
    assert env.client.get("/sidebar/customer/wmA").status_code == 401


def test_point4_forged_or_replayed_state_is_refused(env: Env, fake: FakeWeCom) -> None:
    url = env.client.get("/sidebar", follow_redirects=False).headers["location"]
    back = urlsplit(httpx.get(url.split("#")[0], follow_redirects=False).headers["location"])
    callback = f"{back.path}?{back.query}"
    assert env.client.get(callback, follow_redirects=False).status_code == 303
    env.client.cookies.clear()
    assert env.client.get(callback, follow_redirects=False).status_code == 403  # replay
    q = parse_qs(back.query)
    forged = q["state"][0][:-2] + "AA"
    r = env.client.get("/sidebar/oauth", params={"code": q["code"][0], "state": forged},
                       follow_redirects=False)
    assert r.status_code == 403 and "mp_sb" not in r.cookies


def test_point4_test_tokens_only_in_demo_mode(tmp_path: Path, fake: FakeWeCom, env: Env) -> None:
    body = {"userid": "lifang", "external_userid": "wmA"}
    assert env.post("/v1/sidebar/test-tokens", body).status_code == 404
    assert env.client.get("/sidebar?t=anything").status_code == 404
    with running(_settings(tmp_path / "demo", fake, demo=True)) as demo:
        seed(demo)
        got = demo.post("/v1/sidebar/test-tokens", body)
        assert got.status_code == 200
        page = demo.client.get(urlsplit(got.json()["url"]).path + "?t=" + got.json()["token"])
        assert page.status_code == 200 and "辅食添加" in page.text
        assert demo.client.get("/sidebar?t=" + got.json()["token"][:-3] + "xyz").status_code == 403
