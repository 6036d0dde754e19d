"""Issue 11 point 7 in a real browser: the card page's one script runs under its CSP nonce.

With 'unsafe-inline' gone from script-src, a script without the response's nonce would be
blocked silently; tapping "加企业微信" shows the toast only if the nonce'd script ran.
"""

from __future__ import annotations

import time

import httpx

from tests.e2e.test_card_browser import Browser, H, browser, service  # noqa: F401


def test_point7_csp_nonce_script_runs_in_chromium(service: str, browser: Browser  # noqa: F811
                                                  ) -> None:
    with httpx.Client(base_url=service, headers=H) as api:
        card = api.post("/v1/cards", json={"staff_id": "staff-7", "name": "李芳",
                                           "wecom_user_id": "lifang"}).json()
        page = api.get(f"/c/{card['id']}")
    assert "'unsafe-inline'" not in page.headers["content-security-policy"].split(
        "script-src")[1].split(";")[0]
    browser.open(f"{service}/c/{card['id']}")
    browser.js("document.getElementById('wecom').click()")
    shown = ""
    for _ in range(50):  # the clipboard promise settles asynchronously
        shown = browser.js("document.getElementById('toast').textContent") or ""
        if shown:
            break
        time.sleep(0.05)
    assert "lifang" in shown
