"""Issue 15 point 2: WeChat sign-in on card pages (silent snsapi_base OAuth → openid cookie).

The Official Account's OAuth is the local stand-in (bot/standin.py): its authorize page
redirects back with a one-use code, its `sns/oauth2/access_token` exchanges the code for
the openid. The app runs in-process (TestClient); the redirects between the two are
followed by hand so every hop is checked.
"""

from __future__ import annotations

import base64
import string
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.settings import Settings
from tests.app.cards_env import Env, catalog_item, running, seed_catalog
from tests.bot.fake_wecom import FakeWeCom
from tests.conftest import make_settings

WECHAT_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.50 NetType/WIFI")
SAFARI_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
CARD = {"staff_id": "staff-1", "name": "王小明", "title": "母婴顾问", "provider_id": "sh-01"}
OPENID = "oVisitor-0001"


def _settings(tmp_path: Path, fake: FakeWeCom, *, secret: bool = True) -> Settings:
    wechat = {"token": "spamtest", "app_id": fake.app_id, "api_base": fake.url,
              "oauth_base": fake.url}
    if secret:
        wechat["app_secret"] = fake.app_secret
    return make_settings(tmp_path / "data", wechat=wechat, embedder="hash",
                         embedded_worker=False, public_base_url="http://testserver")


@pytest.fixture
def env(tmp_path: Path, fake: FakeWeCom) -> Iterator[Env]:
    fake.contacts.oauth_openid = OPENID
    with running(_settings(tmp_path, fake)) as e:
        seed_catalog(e.services, [catalog_item("sku-1", "有机米粉", "https://mall.example.com/p/1")])
        yield e


def _card(env: Env) -> str:
    return str(env.post("/v1/cards", CARD).json()["id"])


def _authorize(env: Env, path: str) -> str:
    """Open path in WeChat on a fresh phone; return WeChat's authorize URL the page
    redirects to."""
    env.client.cookies.clear()
    r = env.client.get(path, headers={"User-Agent": WECHAT_UA}, follow_redirects=False)
    assert r.status_code == 302, r.text
    return r.headers["location"]


def _wechat(authorize_url: str) -> str:
    """Let the stand-in's authorize page answer; return our callback path it sends to."""
    r = httpx.get(authorize_url.split("#")[0], follow_redirects=False)
    assert r.status_code == 302, r.text
    back = urlsplit(r.headers["location"])
    assert back.netloc == "testserver" and back.path == "/oauth/wechat"
    return f"{back.path}?{back.query}"


def test_point2_wechat_visitor_is_signed_in_once_and_named_on_the_radar(
        env: Env, fake: FakeWeCom) -> None:
    card_id = _card(env)
    code = env.post(f"/v1/cards/{card_id}/shares", {"sharer_id": "staff-1"}).json()["code"]
    url = _authorize(env, f"/s/{code}")
    parts = urlsplit(url)
    assert url.startswith(f"{fake.url}/connect/oauth2/authorize?appid={fake.app_id}&redirect_uri=")
    assert url.endswith("#wechat_redirect")
    query = parse_qs(parts.query)
    assert query["response_type"] == ["code"] and query["scope"] == ["snsapi_base"]
    assert query["redirect_uri"] == [f"http://testserver/oauth/wechat?next=%2Fs%2F{code}"]
    callback = _wechat(url)
    r = env.client.get(callback, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/s/{code}"
    assert "mp_vid" in r.cookies
    exchanges = [q for q in fake.requests if q.path == "/sns/oauth2/access_token"]
    assert len(exchanges) == 1 and exchanges[0].query["grant_type"] == "authorization_code"

    # Back on the page: no second redirect, the visit is recorded under the openid.
    page = env.client.get(f"/s/{code}", headers={"User-Agent": WECHAT_UA},
                          follow_redirects=False)
    assert page.status_code == 200 and "为你推荐" in page.text
    radar = env.get(f"/v1/cards/{card_id}/visits").json()
    assert [v["visitor_id"] for v in radar["visits"]] == [OPENID]

    # Once the openid is linked to a mall member, the radar names the member.
    env.services.identities.link("mall-42", [("wechat_openid", OPENID)])
    env.clock.advance(86_400)  # a visitor counts once a day
    assert env.client.get(f"/s/{code}", headers={"User-Agent": WECHAT_UA}).status_code == 200
    radar = env.get(f"/v1/cards/{card_id}/visits").json()
    assert radar["visits"][0]["visitor_id"] == "mall-42"


def test_point2_replayed_or_forged_code_and_state_are_refused(env: Env, fake: FakeWeCom) -> None:
    card_id = _card(env)
    callback = _wechat(_authorize(env, f"/c/{card_id}"))
    env.client.cookies.clear()
    assert env.client.get(callback, follow_redirects=False).status_code == 303
    env.client.cookies.clear()

    # The same callback again: its state is spent.
    again = env.client.get(callback, follow_redirects=False)
    assert again.status_code == 403 and "mp_vid" not in again.cookies

    # A fresh, valid state with the spent code: the code is refused before WeChat is asked.
    fresh = parse_qs(urlsplit(_wechat(_authorize(env, f"/c/{card_id}"))).query)
    old = parse_qs(urlsplit(callback).query)
    asked = len([q for q in fake.requests if q.path == "/sns/oauth2/access_token"])
    r = env.client.get("/oauth/wechat", params={"next": f"/c/{card_id}", "code": old["code"][0],
                                               "state": fresh["state"][0]},
                       follow_redirects=False)
    assert r.status_code == 403 and "code already used" in r.text
    assert len([q for q in fake.requests if q.path == "/sns/oauth2/access_token"]) == asked

    # Forged state (one character changed), a state moved onto another page, a made-up code.
    fresh = parse_qs(urlsplit(_wechat(_authorize(env, f"/c/{card_id}"))).query)
    state = fresh["state"][0]
    forged = state[:-1] + ("A" if state[-1] != "A" else "B")
    for params in ({"next": f"/c/{card_id}", "code": fresh["code"][0], "state": forged},
                   {"next": "/c/cother", "code": fresh["code"][0], "state": state},
                   {"next": "https://evil.example/", "code": fresh["code"][0], "state": state}):
        r = env.client.get("/oauth/wechat", params=params, follow_redirects=False)
        assert r.status_code == 403, params
        assert "mp_vid" not in r.cookies
    # WeChat itself refuses a code it never issued (40029) when the state is genuine.
    r = env.client.get("/oauth/wechat", params={"next": f"/c/{card_id}",
                                               "code": "made-up-code", "state": state},
                       follow_redirects=False)
    assert r.status_code == 403 and "40029" in r.text


def test_point2_state_expires(env: Env) -> None:
    card_id = _card(env)
    callback = _wechat(_authorize(env, f"/c/{card_id}"))
    env.clock.advance(301)
    r = env.client.get(callback, follow_redirects=False)
    assert r.status_code == 403 and "expired" in r.text


def test_point2_redirects_once_and_only_inside_wechat(env: Env) -> None:
    card_id = _card(env)
    r = env.client.get(f"/c/{card_id}", headers={"User-Agent": SAFARI_UA},
                       follow_redirects=False)
    assert r.status_code == 200  # not WeChat: no sign-in
    env.client.cookies.clear()
    _authorize(env, f"/c/{card_id}")  # sets the "tried" cookie
    # The visitor came back without signing in (declined, or the callback failed): the page
    # shows, anonymously, instead of redirecting again.
    r = env.client.get(f"/c/{card_id}", headers={"User-Agent": WECHAT_UA},
                       follow_redirects=False)
    assert r.status_code == 200 and "热门好物" in r.text


def test_point2_a_mall_viewer_is_not_sent_to_wechat(env: Env) -> None:
    card_id = _card(env)
    token = env.post("/v1/viewer-tokens", {"user_id": "mall-7"}).json()["token"]
    r = env.client.get(f"/c/{card_id}?vt={token}", follow_redirects=False)
    assert r.status_code == 303
    r = env.client.get(f"/c/{card_id}", headers={"User-Agent": WECHAT_UA},
                       follow_redirects=False)
    assert r.status_code == 200


def test_point2_without_the_setting_pages_stay_anonymous(tmp_path: Path, fake: FakeWeCom) -> None:
    with running(_settings(tmp_path, fake, secret=False)) as env:
        card_id = _card(env)
        r = env.client.get(f"/c/{card_id}", headers={"User-Agent": WECHAT_UA},
                           follow_redirects=False)
        assert r.status_code == 200
        assert env.client.get("/oauth/wechat", params={"next": f"/c/{card_id}", "code": "x",
                                                      "state": "y.z"}).status_code == 404
    assert not [q for q in fake.requests if q.path.startswith("/sns/")]


def test_point2_state_tampered_only_in_base64_padding_bits_is_refused(env: Env) -> None:
    """A state's last character also carries unused low bits that base64 ignores: a state
    differing only there decodes to the same bytes, and must still be refused (this made
    the forged-state test above pass or fail by the state's last character)."""
    card_id = _card(env)
    fresh = parse_qs(urlsplit(_wechat(_authorize(env, f"/c/{card_id}"))).query)
    state, code = fresh["state"][0], fresh["code"][0]
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    tag = state.split(".")[1]
    assert len(tag) % 4, "the tag's last character has padding bits"
    twin = tag[:-1] + alphabet[alphabet.index(tag[-1]) ^ 1]

    def unpad(t: str) -> bytes:
        return base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))

    assert unpad(twin) == unpad(tag)  # the same signature bytes
    r = env.client.get("/oauth/wechat", params={"next": f"/c/{card_id}", "code": code,
                                               "state": state.split(".")[0] + "." + twin},
                       follow_redirects=False)
    assert r.status_code == 403 and "mp_vid" not in r.cookies
    r = env.client.get("/oauth/wechat", params={"next": f"/c/{card_id}", "code": code,
                                               "state": state}, follow_redirects=False)
    assert r.status_code == 303  # the genuine state still signs in
