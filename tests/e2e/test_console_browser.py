"""The operator's console in real headless Chromium (issue 18, "done when").

A real `mingpian serve` (SQLite, the real embedding model) with data sent through the API;
Chromium signs in through the form, opens every page at phone and laptop size with no
console errors and no failed requests, changes a group's settings, adds a tag and sees a new
message tagged with it, exports a segment, and saves screenshots under tests/artifacts/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import API_KEY, free_port
from tests.e2e.test_card_browser import ARTIFACTS, PHONE, Browser, chromium

H = {"Authorization": f"Bearer {API_KEY}"}
LAPTOP = {"width": 1366, "height": 900, "deviceScaleFactor": 1, "mobile": False}
ADMIN, PASSWORD = "lead", "console-password-1"
OUT = ARTIFACTS / "console"


@pytest.fixture
def console_service(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = os.environ | {
        "MINGPIAN_DATA_DIR": str(tmp_path / "data"), "MINGPIAN_API_KEYS": API_KEY,
        "MINGPIAN_PUBLIC_BASE_URL": base, "MINGPIAN_LOG_LEVEL": "WARNING",
        "MINGPIAN_REDIS_URL": "", "MINGPIAN_DEMO": "true", "MINGPIAN_EMBEDDER_THREADS": "1",
    }
    add = subprocess.run([sys.executable, "-m", "app.cli", "console-user", "add", ADMIN,
                          "--role", "admin"], input=PASSWORD + "\n", text=True, env=env,
                         cwd=tmp_path, capture_output=True, check=False)
    assert add.returncode == 0, add.stderr
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("mingpian serve did not start")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _seed(base: str) -> dict[str, str]:
    now = int(time.time())
    items = [
        {"id": "sku-1", "kind": "product", "title": "有机高铁米粉 6月+", "price_cents": 6900,
         "url": "https://mall.example.com/p/sku-1", "category": "母婴/辅食", "tags": ["辅食添加"],
         "availability": [{"provider_id": "sh-01", "price_cents": 6900, "stock": 12}]},
        {"id": "crs-1", "kind": "course", "title": "宝宝睡眠引导课", "price_cents": 19_900,
         "url": "https://mall.example.com/c/1", "category": "母婴/早教", "tags": ["睡眠"]},
    ]
    chat = [("m1", "u-1001", "小雨妈妈", "宝宝六个月了，辅食先加什么好？"),
            ("m2", "u-1001", "小雨妈妈", "辅食加了米粉，娃不爱吃怎么办"),
            ("m3", "u-1002", "Lily", "自己做辅食泥还是买现成的米粉"),
            ("m4", "u-1003", "乐乐爸", "娃晚上老醒，一晚上起来三四次")]
    with httpx.Client(base_url=base, headers=H, timeout=30) as api:
        assert api.post("/v1/catalog/items", json={"items": items}).status_code == 200
        card = api.post("/v1/cards", json={"staff_id": "staff-7", "name": "李芳",
                                           "title": "高级母婴顾问", "company": "好孕母婴",
                                           "provider_id": "sh-01"}).json()
        api.post(f"/v1/cards/{card['id']}/shares", json={"sharer_id": "u-1001"})
        msgs = [{"msg_id": i, "platform": "wecom", "group_id": "g-muying-01", "user_id": u,
                 "user_name": n, "text": t, "ts": now - 100 + k}
                for k, (i, u, n, t) in enumerate(chat)]
        assert api.post("/v1/messages", json={"messages": msgs}).status_code in (200, 202)
        _wait(lambda: api.get("/v1/users/u-1003/profile").status_code == 200, "messages")
    return {"card": str(card["id"])}


def _wait(ok: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"{what} never arrived"
        time.sleep(0.2)


class Watch:
    """Console errors, exceptions and failed requests seen by the browser."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        for domain in ("Network.enable", "Runtime.enable", "Log.enable"):
            browser.call(domain)

    def problems(self, events: list[dict[str, Any]]) -> list[str]:
        out = []
        for e in events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown" or (
                    m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert")):
                out.append(f"{m}: {json.dumps(p, ensure_ascii=False)[:300]}")
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif m == "Network.loadingFailed" and not p.get("canceled"):
                out.append(f"failed: {p.get('errorText')} {p.get('blockedReason', '')}")
            elif m == "Network.responseReceived" and p["response"]["status"] >= 400:
                out.append(f"HTTP {p['response']['status']} {p['response']['url']}")
        return out

    def open(self, url: str) -> list[dict[str, Any]]:
        """Navigate and return every event until the page loaded (and a moment after)."""
        b = self.browser
        b.events.clear()
        b.call("Page.navigate", url=url)
        return self._until_load()

    def _until_load(self) -> list[dict[str, Any]]:
        b = self.browser
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        loaded = False
        while time.monotonic() < deadline:
            seen += b.events
            b.events.clear()
            if any(e.get("method") == "Page.loadEventFired" for e in seen):
                loaded = True
                break
            b.events.append(json.loads(b.ws.recv()))
        assert loaded, "the page did not load"
        b.js("1")  # drain what arrived with the load
        seen += b.events
        b.events.clear()
        return seen

    def act(self, script: str) -> list[dict[str, Any]]:
        """Run a script that navigates (a form submit) and wait for the next page."""
        b = self.browser
        b.events.clear()
        b.js(script)
        return self._until_load()


def _shots(browser: Browser, name: str, base: str, path: str) -> None:
    for size, metrics in (("phone", PHONE), ("laptop", LAPTOP)):
        browser.call("Emulation.setDeviceMetricsOverride", **metrics)
        browser.call("Page.navigate", url=base + path)
        browser.wait_load()
        browser.screenshot(OUT / f"{name}-{size}.png")


def test_console_in_chromium(console_service: str, tmp_path: Path) -> None:  # noqa: PLR0915  one user's walk through every page, in order
    base = console_service
    seeded = _seed(base)
    browser = Browser(chromium(), tmp_path / "chromium-profile")
    try:
        watch = Watch(browser)
        browser.call("Emulation.setDeviceMetricsOverride", **LAPTOP)
        events = watch.open(base + "/console/")
        assert "/console/login" in browser.js("location.href")  # signed out → the login page
        assert watch.problems(events) == []
        browser.screenshot(OUT / "login-laptop.png")
        events = watch.act(
            f"document.querySelector('input[name=name]').value = {json.dumps(ADMIN)};"
            f"document.querySelector('input[name=password]').value = {json.dumps(PASSWORD)};"
            "document.querySelector('form').submit()")
        assert browser.js("location.pathname") == "/console/"
        assert "概览" in browser.js("document.body.innerText")

        pages = {"overview": "/console/", "groups": "/console/groups",
                 "group": "/console/groups/g-muying-01",
                 "segments": "/console/segments?tag=%E8%BE%85%E9%A3%9F%E6%B7%BB%E5%8A%A0&days=30",
                 "members": "/console/members", "member": "/console/members/u-1001",
                 "salespeople": "/console/salespeople",
                 "salesperson": f"/console/salespeople/{seeded['card']}",
                 "referrals": "/console/referrals?user=u-1001", "ledger": "/console/ledger",
                 "catalog": "/console/catalog?q=%E5%AE%9D%E5%AE%9D%E8%BE%85%E9%A3%9F",
                 "taxonomy": "/console/taxonomy", "dead-letters": "/console/dead-letters",
                 "audit": "/console/audit"}
        for name, path in pages.items():
            events = watch.open(base + path)
            assert watch.problems(events) == [], name
            assert browser.js("location.pathname") == path.split("?")[0], name
            _shots(browser, name, base, path)
            browser.call("Emulation.setDeviceMetricsOverride", **PHONE)
            watch.open(base + path)
            width = browser.js("document.documentElement.scrollWidth")
            assert width <= PHONE["width"] + 1, f"{name} is wider than a phone: {width}"
            browser.call("Emulation.setDeviceMetricsOverride", **LAPTOP)
        text = browser.js("document.body.innerText")
        assert "失败消息" in text

        # The group page knows the members by the names the platform gave.
        watch.open(base + "/console/groups/g-muying-01")
        assert "小雨妈妈" in browser.js("document.body.innerText")
        # Change the group's settings: replies off, quiet 21–9, the card linked.
        events = watch.act(
            "const f = document.querySelector('form.settings');"
            "f.querySelector('input[name=replies]').checked = false;"
            "f.querySelector('input[name=quiet_start_hour]').value = '21';"
            "f.querySelector('input[name=quiet_end_hour]').value = '9';"
            "f.querySelector('select[name=card_id]').selectedIndex = 1;"
            "f.submit()")
        assert watch.problems(events) == []
        assert "群设置已保存" in browser.js("document.body.innerText")
        assert browser.js("document.querySelector('input[name=replies]').checked") is False
        assert browser.js("document.querySelector('input[name=quiet_start_hour]').value") == "21"
        assert browser.js("document.querySelector('select[name=card_id]').value") == \
            seeded["card"]
        # One source of truth: the bot's per-group settings, as the API reads them.
        with httpx.Client(base_url=base, headers=H, timeout=30) as api:
            got = api.get("/v1/groups/g-muying-01/settings").json()
        assert got == {"group_id": "g-muying-01", "configured": True, "card_id": seeded["card"],
                       "reply_enabled": False, "quiet_hours": {"start_hour": 21, "end_hour": 9}}

        # Add a tag, preview it, apply it, and see a new message tagged with it.
        watch.open(base + "/console/taxonomy")
        fill = ("const f = document.getElementById('tag-form');"
                "f.querySelector('input[name=tag]').value = '露营装备';"
                "f.querySelector('input[name=industry]').value = '户外';"
                "f.querySelector('textarea[name=keywords]').value = '帐篷，天幕，睡袋，露营';"
                "f.querySelector('textarea[name=examples]').value = "
                "'周末去湖边露营，帐篷天幕都带上\\n想买个轻一点的帐篷\\n露营睡袋哪种保暖';"
                "f.querySelector('textarea[name=sample]').value = '新买的帐篷防水吗\\n今天吃什么';")
        events = watch.act(fill + "f.querySelector('button[type=submit]').click()")
        assert watch.problems(events) == []
        text = browser.js("document.body.innerText")
        assert "预览：1 / 2" in text and "新买的帐篷防水吗" in text
        browser.screenshot(OUT / "taxonomy-preview-laptop.png")
        events = watch.act(fill + "f.querySelector('button[formaction]').click()")
        assert watch.problems(events) == []
        assert "已生效" in browser.js("document.body.innerText")
        with httpx.Client(base_url=base, headers=H, timeout=30) as api:
            msg = {"msg_id": "m9", "platform": "wecom", "group_id": "g-muying-01",
                   "user_id": "u-1004", "user_name": "阿杰", "ts": int(time.time()),
                   "text": "周末买了个新帐篷和睡袋，准备去湖边露营"}
            assert api.post("/v1/messages", json=msg).status_code in (200, 202)

            def tagged() -> bool:
                r = api.get("/v1/users/u-1004/profile")
                return r.status_code == 200 and "露营装备" in {t["tag"] for t in r.json()["tags"]}

            _wait(tagged, "the new tag on a new message")
        watch.open(base + "/console/members/u-1004")
        assert "露营装备" in browser.js("document.body.innerText")
        browser.screenshot(OUT / "member-new-tag-laptop.png")

        # Export a segment (signed in: the browser's cookie).
        watch.open(base + pages["segments"])
        got = browser.call("Runtime.evaluate", awaitPromise=True, returnByValue=True,
                           expression="fetch('/console/segments.csv?tag=' + "
                           "encodeURIComponent('辅食添加') + '&days=30')"
                           ".then(r => r.arrayBuffer())"
                           ".then(b => Array.from(new Uint8Array(b)))")
        data = bytes(got["result"]["value"])
        assert data.startswith(b"\xef\xbb\xbf")
        body = data.decode("utf-8-sig")
        assert "u-1001" in body and "小雨妈妈" in body and "u-1003" not in body
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "segment-辅食添加.csv").write_bytes(data)
    finally:
        browser.close()
