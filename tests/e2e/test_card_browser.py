"""The card as a person sees it: real headless Chromium at a phone viewport, real `serve`.

Opens `/c/{id}` and `/s/{code}`, reads the text, taps an item and lands on the (local,
fake) mall with `ref=<code>`, and saves screenshots under tests/artifacts/. Chromium is
driven over the DevTools protocol (websocket-client). `make test` installs Debian's
chromium when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import websocket

from tests.conftest import API_KEY, free_port

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
H = {"Authorization": f"Bearer {API_KEY}"}
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
WECHAT_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.50 NetType/WIFI Language/zh_CN")


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("MINGPIAN_NO_BROWSER") == "1":
            pytest.skip("MINGPIAN_NO_BROWSER=1")
        pytest.fail("chromium is not installed: apt-get install -y chromium (make test does)")
    return exe


# --------------------------------------------------------------------------- the fake mall


class _Mall(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (f"<!doctype html><meta charset=utf-8><title>商城</title>"
                f"<h1>商城商品页</h1><p id=path>{self.path}</p>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def mall() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Mall)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------- mingpian serve


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = os.environ | {
        "MINGPIAN_DATA_DIR": str(tmp_path / "data"), "MINGPIAN_API_KEYS": API_KEY,
        "MINGPIAN_PUBLIC_BASE_URL": base, "MINGPIAN_LOG_LEVEL": "WARNING",
        "MINGPIAN_EMBEDDER": "hash", "MINGPIAN_REDIS_URL": "",
        "MINGPIAN_DEMO": "true",  # the test's short API key would stop serve otherwise
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


# --------------------------------------------------------------------------- Chromium over CDP


class Browser:
    """One headless Chromium tab, driven over the DevTools protocol."""

    def __init__(self, exe: str, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
             "--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if found:
                port = int(found.group(1))
        assert port is not None, "chromium did not open its DevTools port"
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # drain
        with httpx.Client() as c:
            pages = [t for t in c.get(f"http://127.0.0.1:{port}/json/list").json()
                     if t["type"] == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=20)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", **PHONE)
        self.call("Emulation.setUserAgentOverride", userAgent=WECHAT_UA)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return dict(msg.get("result", {}))
            self.events.append(msg)

    def wait_load(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e.get("method") == "Page.loadEventFired" for e in self.events):
                self.events.clear()
                return
            self.events.append(json.loads(self.ws.recv()))
        raise AssertionError("the page did not load")

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_load()

    def js(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return res["result"].get("value")

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(chromium(), tmp_path / "chromium-profile")
    yield b
    b.close()


# --------------------------------------------------------------------------- the test


def test_card_and_shared_card_on_a_phone(service: str, mall: str, browser: Browser) -> None:
    items = [
        {"id": "sku-10023", "kind": "product", "title": "有机高铁米粉 6月+", "price_cents": 6900,
         "url": f"{mall}/p/sku-10023?src=card", "category": "母婴/辅食", "tags": ["辅食添加"]},
        {"id": "crs-sleep", "kind": "course", "title": "宝宝睡眠引导课（0-3岁）",
         "price_cents": 19_900, "url": f"{mall}/c/sleep", "category": "母婴/早教"},
    ]
    with httpx.Client(base_url=service, headers=H) as api:
        assert api.post("/v1/catalog/items", json={"items": items}).status_code == 200
        card = api.post("/v1/cards", json={
            "staff_id": "staff-7", "name": "李芳", "title": "高级母婴顾问",
            "company": "上海好孕母婴生活馆", "phone": "021-6288 1234", "provider_id": "sh-01",
            "bio": "国家二级育婴师，十年一线经验。辅食、睡眠、早教，都可以问我。",
            "wecom_user_id": "lifang"}).json()
        code = api.post(f"/v1/cards/{card['id']}/shares", json={"sharer_id": "u-1001"}
                        ).json()["code"]
        # The index follows the catalog within a poll or two.
        deadline = time.monotonic() + 10
        while "有机高铁米粉" not in api.get(f"/c/{card['id']}").text:
            assert time.monotonic() < deadline, "catalog items never reached the card page"
            time.sleep(0.2)

    browser.open(f"{service}/c/{card['id']}")
    text = browser.js("document.body.innerText")
    assert "李芳" in text and "上海好孕母婴生活馆" in text and "有机高铁米粉" in text
    assert browser.js("document.querySelector('a.call').getAttribute('href')") == "tel:02162881234"
    # Nothing is wider than the phone.
    assert browser.js("document.documentElement.scrollWidth") <= PHONE["width"]
    browser.screenshot(ARTIFACTS / "card-page.png")

    browser.open(f"{service}/s/{code}")
    assert "李芳" in browser.js("document.body.innerText")
    browser.screenshot(ARTIFACTS / "shared-card-page.png")
    href = browser.js("document.querySelector('a.item').getAttribute('href')")
    assert href.startswith(f"/r/{code}/")
    browser.events.clear()
    browser.js("document.querySelector('a.item').click()")
    browser.wait_load()
    landed = browser.js("location.href")
    assert landed.startswith(mall + "/") and f"ref={code}" in landed
    assert "商城商品页" in browser.js("document.body.innerText")

    with httpx.Client(base_url=service, headers=H) as api:
        radar = api.get(f"/v1/cards/{card['id']}/visits").json()
        poster = api.get(f"/c/{card['id']}/poster.png?code={code}")
    assert poster.status_code == 200 and poster.content[:8] == b"\x89PNG\r\n\x1a\n"
    (ARTIFACTS / "poster.png").write_bytes(poster.content)
    assert radar["opens"] == 1 and radar["clicks"] == 1
    assert radar["visits"][0]["sharer_id"] == "u-1001"
