"""Issue 11, points 1 and 2: hostile callback bodies are refused at once without stalling
anything else, and the Official Account's safe mode cannot be downgraded."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from app.main import create_app
from app.secrets_check import startup_problems
from app.services import INBOX
from app.settings import Settings
from tests.bot.support import (
    bot_app,
    bot_settings,
    message_xml,
    wechat_config,
    wechat_post,
    wecom_post,
)
from tests.conftest import free_port

# The body: 781 KiB, answered 400 after ~23 s while everything else waited.
FLOOD = b"<xml><a>" + b"<b/>" * 200_000 + b"</a></xml>"
# Under the 64 KiB byte cap (about 59 KiB): only the element cap refuses it.
REPEATS = b"<xml><a>" + b"<bbbbbbbbb/>" * 5_000 + b"</a></xml>"
UNSIGNED = {"msg_signature": "0" * 40, "timestamp": "1", "nonce": "2"}
OA_AES = {**UNSIGNED, "encrypt_type": "aes", "signature": "0" * 40}


def test_point1_unsigned_huge_body_refused_fast(tmp_path: Path) -> None:
    assert len(FLOOD) > 64 * 1024 > len(REPEATS) > 58 * 1024
    with bot_app(bot_settings(tmp_path / "data")) as (client, services):
        for path, query in (("/wecom/callback", UNSIGNED), ("/wechat/callback", OA_AES)):
            # Refused by size before any parsing (before: parsed for 23 s, then a 400).
            r = client.post(path, params=query, content=FLOOD)
            assert r.status_code == 413, r.text
            assert r.json()["error"]["code"] == "payload_too_large"
            # Under the size cap: refused at the 257th element, not after all 5,000.
            r = client.post(path, params=query, content=REPEATS)
            assert r.status_code == 400, r.text
            assert "more than 256 XML elements" in r.json()["error"]["message"]
        assert services.store.queue_depth(INBOX) == 0
        # A real message still goes through.
        q, b = wecom_post(message_xml())
        assert client.post("/wecom/callback", params=q, content=b).status_code == 200
        assert services.store.queue_depth(INBOX) == 1


def test_point1_callback_cap_is_its_own_setting(tmp_path: Path) -> None:
    # MINGPIAN_MAX_CALLBACK_BYTES: 1 KiB refuses a real (about 700-byte-envelope) message
    # padded past it; the rest of the API keeps max_body_bytes.
    settings = bot_settings(tmp_path / "data", max_callback_bytes=1024)
    q, b = wecom_post(message_xml(content="x" * 800))
    assert len(b) > 1024
    with TestClient(create_app(settings)) as c:
        assert c.post("/wecom/callback", params=q, content=b).status_code == 413
        small_q, small_b = wecom_post(message_xml())
        assert c.post("/wecom/callback", params=small_q,
                      content=small_b).status_code == 200


@contextmanager
def _served(settings: Settings) -> Iterator[str]:
    """The app under a real uvicorn in a thread (requests truly run side by side)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _hostile(url: str, i: int) -> int:
    path, query = ("/wecom/callback", UNSIGNED) if i % 2 else ("/wechat/callback", OA_AES)
    with httpx.Client(base_url=url, timeout=30) as c:
        return c.post(path, params=query, content=REPEATS if i % 4 < 2 else FLOOD).status_code


def test_point1_healthz_stays_fast_during_a_hostile_burst(tmp_path: Path) -> None:
    with _served(bot_settings(tmp_path / "data")) as url, \
            ThreadPoolExecutor(max_workers=8) as pool, httpx.Client(base_url=url) as c:
        burst = [pool.submit(_hostile, url, i) for i in range(256)]
        # /healthz answered while hostile bodies were still in flight: the loop was free.
        during: list[int] = []
        while not all(f.done() for f in burst):
            status = c.get("/healthz", timeout=30).status_code
            if not all(f.done() for f in burst):
                during.append(status)
        statuses = sorted({f.result() for f in burst})
        assert statuses == [400, 413]  # every hostile body refused, none queued
        assert during and all(status == 200 for status in during)
        r = c.get("/metrics")
        assert f'mingpian_queue_depth{{queue="{INBOX}"}} 0.0' in r.text


# -- point 2 --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["safe", "compatible", None])
def test_point2_plaintext_post_refused_in_safe_mode(tmp_path: Path, mode: str | None) -> None:
    # None: no mode set, an AES key configured → safe.
    settings = bot_settings(tmp_path / "data", wechat=wechat_config(mode))
    with bot_app(settings) as (client, services):
        # A plaintext POST with a valid `signature` (token, timestamp, nonce: never the body).
        q, b = wechat_post(message_xml(content="我要买", sender="o-anyone"), encrypted=False)
        r = client.post("/wechat/callback", params=q, content=b)
        assert r.status_code == 403, r.text
        assert "only encrypted" in r.json()["error"]["message"]
        # The query's openid must be the message's sender.
        q, b = wechat_post(message_xml(content="我要买", sender="o-victim"), openid="o-me")
        assert client.post("/wechat/callback", params=q, content=b).status_code == 403
        assert services.store.queue_depth(INBOX) == 0
        # The real thing, encrypted and with the right openid, is taken.
        q, b = wechat_post(message_xml(content="我要买", sender="o-me"))
        assert client.post("/wechat/callback", params=q, content=b).text == "success"
        assert services.store.queue_depth(INBOX) == 1


def test_point2_plaintext_mode_still_takes_plain_signed_posts(tmp_path: Path) -> None:
    for name, wechat in (("with-key", wechat_config("plaintext")),
                         ("no-key", {**wechat_config(), "aes_key": None})):
        with bot_app(bot_settings(tmp_path / name, wechat=wechat)) as (client, services):
            q, b = wechat_post(message_xml(content="在吗", sender="o-1"), encrypted=False)
            assert client.post("/wechat/callback", params=q, content=b).text == "success"
            q, b = wechat_post(message_xml(content="在吗", sender="o-2"), encrypted=False,
                               openid="o-1")
            assert client.post("/wechat/callback", params=q, content=b).status_code == 403
            assert services.store.queue_depth(INBOX) == 1


@pytest.mark.parametrize("mode", ["safe", "compatible"])
def test_point2_safe_mode_without_aes_key_refused_at_startup(tmp_path: Path,
                                                             mode: str) -> None:
    settings = bot_settings(tmp_path / "data", wechat={**wechat_config(mode), "aes_key": None})
    assert startup_problems(settings)[0].startswith(f"MINGPIAN_WECHAT__MODE={mode} needs")
    with pytest.raises(ValueError, match=f"{mode} mode needs an EncodingAESKey"), \
            TestClient(create_app(settings)):
        pass
