"""Issue 15 points 2, 4 and 6 as a person sees them: real headless Chromium, real `serve`,
WeCom and the Official Account stood in for by bot/standin.py on a local port.

- The sidebar: WeCom's OAuth names the member, the page's JS-SDK (the stand-in's, which
  checks our agentConfig signature against the ticket it issued, as WeCom's client does)
  names the chat's customer, and the server shows that customer only to a member who
  follows them. Also the demo-mode test token. Screenshots at a phone-sized sidebar width.
- The card page opened in WeChat: the silent OAuth round trip, then "加企业微信" opens the
  card's 联系我 QR code (a real PNG from the stand-in). Screenshots.
Screenshots go to tests/artifacts/ (like tests/e2e/test_card_browser.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.bot.fake_wecom import FakeWeCom
from tests.conftest import API_KEY, CORP_ID, free_port
from tests.e2e.test_card_browser import ARTIFACTS, Browser, chromium

H = {"Authorization": f"Bearer {API_KEY}"}
SIDEBAR = {"width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": True}
OPENID = "oVisitor-0001"
MESSAGES = ["宝宝六个月了，辅食添加从米粉开始吗？", "辅食添加要注意过敏吗", "最近宝宝睡眠不好，夜醒好多次",
            "辅食添加后便秘了怎么办", "宝宝出牙期间流口水"]


@pytest.fixture
def stand_in() -> Iterator[FakeWeCom]:
    with FakeWeCom(corp_id=CORP_ID) as f:
        f.contacts.oauth_userid = "lifang"
        f.contacts.oauth_openid = OPENID
        f.contacts.current_external_contact = "wmA"
        f.contacts.add_contact("wmA", follow="lifang")
        yield f


@pytest.fixture
def service(tmp_path: Path, stand_in: FakeWeCom) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = os.environ | {
        "MINGPIAN_DATA_DIR": str(tmp_path / "data"), "MINGPIAN_API_KEYS": API_KEY,
        "MINGPIAN_PUBLIC_BASE_URL": base, "MINGPIAN_LOG_LEVEL": "WARNING",
        "MINGPIAN_EMBEDDER": "hash", "MINGPIAN_REDIS_URL": "", "MINGPIAN_DEMO": "true",
        "MINGPIAN_WECOM__CORP_ID": CORP_ID, "MINGPIAN_WECOM__TOKEN": "QDG6eK",
        "MINGPIAN_WECOM__AES_KEY": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
        "MINGPIAN_WECOM__AGENT_ID": "1000002", "MINGPIAN_WECOM__SECRET": stand_in.secret,
        "MINGPIAN_WECOM__API_BASE": stand_in.url, "MINGPIAN_WECOM__OAUTH_BASE": stand_in.url,
        "MINGPIAN_WECOM__JSSDK_URL": f"{stand_in.url}/jssdk.js",
        "MINGPIAN_WECHAT__TOKEN": "spamtest", "MINGPIAN_WECHAT__APP_ID": stand_in.app_id,
        "MINGPIAN_WECHAT__APP_SECRET": stand_in.app_secret,
        "MINGPIAN_WECHAT__API_BASE": stand_in.url, "MINGPIAN_WECHAT__OAUTH_BASE": stand_in.url,
        "MINGPIAN_TAGS__ENABLED": "false",
    }
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with httpx.Client() as c:
                    if c.get(base + "/healthz", timeout=1).status_code == 200:
                        break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("mingpian serve did not start")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(chromium(), tmp_path / "chromium-profile")
    yield b
    b.close()


def _seed(service: str) -> tuple[str, str]:
    """Catalog, lifang's card, wmA's chat (through the API and the worker), a tap and a
    binding; return the card id and its share code."""
    mall = "https://mall.example.com"
    items = [
        {"id": "sku-10023", "kind": "product", "title": "有机高铁米粉 6月+", "price_cents": 6900,
         "url": f"{mall}/p/sku-10023", "category": "母婴/辅食", "tags": ["辅食添加"]},
        {"id": "sku-10017", "kind": "product", "title": "吸盘辅食碗勺套装", "price_cents": 6900,
         "url": f"{mall}/p/sku-10017", "category": "母婴/辅食", "tags": ["辅食添加"]},
        {"id": "crs-sleep", "kind": "course", "title": "宝宝睡眠引导课（0-3岁）",
         "price_cents": 19_900, "url": f"{mall}/c/sleep", "category": "母婴/早教",
         "tags": ["睡眠"]},
    ]
    with httpx.Client(base_url=service, headers=H, timeout=30) as api:
        assert api.post("/v1/catalog/items", json={"items": items}).status_code == 200
        card = api.post("/v1/cards", json={
            "staff_id": "staff-7", "name": "李芳", "title": "高级母婴顾问",
            "company": "上海好孕母婴生活馆", "phone": "021-6288 1234", "provider_id": "sh-01",
            "bio": "国家二级育婴师，十年一线经验。辅食、睡眠、早教，都可以问我。",
            "wecom_user_id": "lifang"}).json()
        code = api.post(f"/v1/cards/{card['id']}/shares", json={"sharer_id": "staff-7"}
                        ).json()["code"]
        msgs = [{"msg_id": f"e2e-{n}", "platform": "wecom", "group_id": "g-muying-01",
                 "user_id": "wmA", "text": t, "ts": int(time.time()) - 60 + n}
                for n, t in enumerate(MESSAGES)]
        assert api.post("/v1/messages", json={"messages": msgs}).status_code in (200, 202)
        deadline = time.monotonic() + 30
        while True:
            prof = api.get("/v1/users/wmA/profile")
            if prof.status_code == 200 and prof.json().get("tags"):
                break
            assert time.monotonic() < deadline, "the worker never profiled wmA"
            time.sleep(0.3)
        token = api.post("/v1/viewer-tokens", json={"user_id": "wmA"}).json()["token"]
        assert api.post("/v1/referrals/bind", json={"user_id": "wmA", "code": code}
                        ).status_code == 200
    with httpx.Client(base_url=service, timeout=30) as shopper:  # wmA taps an item
        shopper.get(f"/s/{code}?vt={token}", follow_redirects=True)
        assert shopper.get(f"/r/{code}/crs-sleep").status_code == 302
    return str(card["id"]), str(code)


def _wait_path(browser: Browser, prefix: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not str(browser.js("location.pathname")).startswith(prefix):
        assert time.monotonic() < deadline, browser.js("document.body.innerText")
        time.sleep(0.1)
    while browser.js("document.readyState") != "complete":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_point4_sidebar_in_chromium(service: str, stand_in: FakeWeCom, browser: Browser) -> None:
    _seed(service)
    browser.call("Emulation.setDeviceMetricsOverride", **SIDEBAR)
    browser.open(f"{service}/sidebar")
    _wait_path(browser, "/sidebar/customer/wmA")
    assert stand_in.contacts.verified_signatures == 1  # our agentConfig signature held
    text = str(browser.js("document.body.innerText"))
    assert "客户 wmA" in text and "辅食添加" in text and "条" in text
    assert "有机高铁米粉" in text and "宝宝睡眠引导课" in text  # recommended; tapped
    assert "staff-7" in text  # referrer
    for line in MESSAGES:
        assert line not in text  # no chat text, ever
    assert browser.js("document.documentElement.scrollWidth") <= SIDEBAR["width"]
    links = browser.js("Array.from(document.querySelectorAll('button.send')).map("
                       "b => b.getAttribute('data-url'))")
    assert links and all(u.startswith(f"{service}/r/") for u in links)
    browser.screenshot(ARTIFACTS / "sidebar.png")

    # The demo-mode test token opens the same customer without WeCom's client.
    with httpx.Client(base_url=service, headers=H) as api:
        got = api.post("/v1/sidebar/test-tokens",
                       json={"userid": "lifang", "external_userid": "wmA"}).json()
    browser.open(got["url"])
    assert "辅食添加" in str(browser.js("document.body.innerText"))
    browser.screenshot(ARTIFACTS / "sidebar-demo-token.png")


def test_points2_and_6_card_in_wechat_signs_in_and_shows_the_contact_qr(
        service: str, stand_in: FakeWeCom, browser: Browser) -> None:
    card_id, code = _seed(service)
    browser.open(f"{service}/s/{code}")  # WeChat's UA: through the silent OAuth and back
    _wait_path(browser, f"/s/{code}")
    assert [r.path for r in stand_in.requests if r.path == "/sns/oauth2/access_token"] == [
        "/sns/oauth2/access_token"]
    with httpx.Client(base_url=service, headers=H) as api:
        radar = api.get(f"/v1/cards/{card_id}/visits").json()
    assert OPENID in [v["visitor_id"] for v in radar["visits"]]  # the radar names them

    assert browser.js("document.getElementById('qr').offsetHeight") == 0
    browser.js("document.getElementById('wecom-qr').click()")
    deadline = time.monotonic() + 10
    while not browser.js("document.querySelector('#qr img').naturalWidth > 0 && "
                         "document.getElementById('qr').offsetHeight > 0"):
        assert time.monotonic() < deadline, "the 联系我 QR code did not show"
        time.sleep(0.1)
    src = browser.js("document.querySelector('#qr img').src")
    assert src.startswith(f"{stand_in.url}/qr/")
    assert "添加李芳的企业微信" in str(browser.js("document.body.innerText"))
    assert browser.js("document.documentElement.scrollWidth") <= 390
    browser.screenshot(ARTIFACTS / "card-contact-qr.png")
