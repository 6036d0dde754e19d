"""Test support for the bot: signed callbacks built with real crypto, an app on its own services, a drain."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from wechatpy.crypto import WeChatCrypto as OACrypto
from wechatpy.enterprise.crypto import WeChatCrypto as WeComCrypto

from app.main import create_app
from app.services import INBOX, Services, build_services
from app.settings import Settings
from catalog_sync.loader import demo_catalog_path
from models.catalog import CatalogItem
from store import Store
from store.consumer import consume_once
from tests.bot.fake_wecom import FakeWeCom
from tests.conftest import CORP_ID as CORP_ID  # re-exported: the tests import it from here
from tests.conftest import make_settings

# Tencent's published sample (WeCom "加解密方案说明").
TOKEN = "QDG6eK"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
# Tencent's Official Account sample (WXBizMsgCrypt sample code).
OA_TOKEN = "spamtest"
OA_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
OA_APP_ID = "wx2c2769f8efd9abc2"

_ids = itertools.count(7_000_000_000_000_000_000)


def wechat_config(mode: str | None = None) -> dict[str, Any]:
    """The Official Account's settings with the sample keys, in mode (None: derived, i.e.
    safe since there is a key)."""
    return {"token": OA_TOKEN, "app_id": OA_APP_ID, "aes_key": OA_AES_KEY, "mode": mode}


def bot_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings with WeCom and the Official Account configured with the sample keys."""
    values: dict[str, Any] = {
        "wecom": {"corp_id": CORP_ID, "token": TOKEN, "aes_key": AES_KEY, "agent_id": "1000002"},
        "wechat": wechat_config(),
        "embedded_worker": False,
        "embedder": "hash",
    }
    values.update(overrides)
    return make_settings(data_dir, **values)


def next_msg_id() -> str:
    """Return a fresh numeric MsgId."""
    return str(next(_ids))


def _cdata(name: str, value: str) -> str:
    return f"<{name}><![CDATA[{value}]]></{name}>"


def message_xml(msg_type: str = "text", *, content: str = "你好", sender: str = "zhangsan",
                msg_id: str | None = None, create_time: int = 1764202312,
                to: str = CORP_ID, extra: dict[str, str] | None = None) -> str:
    """Return a plaintext WeCom/WeChat message."""
    parts = [_cdata("ToUserName", to), _cdata("FromUserName", sender),
             f"<CreateTime>{create_time}</CreateTime>", _cdata("MsgType", msg_type)]
    if msg_type == "text":
        parts.append(_cdata("Content", content))
    for k, v in (extra or {}).items():
        parts.append(_cdata(k, v))
    parts.append(f"<MsgId>{msg_id or next_msg_id()}</MsgId>")
    parts.append("<AgentID>1000002</AgentID>")
    return "<xml>" + "".join(parts) + "</xml>"


def event_xml(event: str, *, sender: str = "zhangsan", create_time: int = 1764202312,
              to: str = CORP_ID, extra: dict[str, str] | None = None) -> str:
    """Return a plaintext event."""
    parts = [_cdata("ToUserName", to), _cdata("FromUserName", sender),
             f"<CreateTime>{create_time}</CreateTime>", _cdata("MsgType", "event"),
             _cdata("Event", event)]
    for k, v in (extra or {}).items():
        parts.append(_cdata(k, v))
    parts.append("<AgentID>1000002</AgentID>")
    return "<xml>" + "".join(parts) + "</xml>"


def _signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def wecom_post(plain: str | bytes, *, token: str = TOKEN, aes_key: str = AES_KEY,
               corp_id: str = CORP_ID, timestamp: str = "1764202312"
               ) -> tuple[dict[str, str], bytes]:
    """Return (query, body) of an encrypted WeCom callback carrying plain."""
    crypto = WeComCrypto(token, aes_key, corp_id)
    nonce = str(secrets.randbelow(10**9))
    envelope = crypto.encrypt_message(plain, nonce, timestamp)
    # WeCom's real body: ToUserName, Encrypt, AgentID; the signature goes in the query.
    encrypt = envelope.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    body = (f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID>"
            "</xml>").encode()
    query = {"msg_signature": _signature(token, timestamp, nonce, encrypt),
             "timestamp": timestamp, "nonce": nonce}
    return query, body


def wechat_post(plain: str, *, encrypted: bool = True, timestamp: str = "1764202312",
                openid: str | None = None) -> tuple[dict[str, str], bytes]:
    """Return (query, body) of an Official Account callback (safe mode or plaintext).

    WeChat puts the sender's openid in the query too: by default the plain message's
    FromUserName, as WeChat sends it (none when the message has none)."""
    nonce = str(secrets.randbelow(10**9))
    if openid is None:
        sender = re.search(r"<FromUserName>(?:<!\[CDATA\[)?(.*?)(?:\]\]>)?</FromUserName>", plain)
        openid = sender.group(1) if sender else ""
    query = {"signature": _signature(OA_TOKEN, timestamp, nonce), "timestamp": timestamp,
             "nonce": nonce}
    if openid:
        query["openid"] = openid
    if not encrypted:
        return query, plain.encode()
    crypto = OACrypto(OA_TOKEN, OA_AES_KEY, OA_APP_ID)
    envelope = crypto.encrypt_message(plain, nonce, timestamp)
    encrypt = envelope.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    body = (f"<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>").encode()
    query.update(encrypt_type="aes", msg_signature=_signature(OA_TOKEN, timestamp, nonce,
                                                              encrypt))
    return query, body


def drain(services: Services, *, timeout_s: float = 30.0) -> int:
    """Run the inbox consumer in this thread until the queue is empty; return items handled."""
    deadline = time.monotonic() + timeout_s
    done = 0
    while services.store.queue_depth(INBOX) > 0:
        assert time.monotonic() < deadline, "the inbox did not drain"
        done += consume_once(services.store, queue=INBOX, handler=services.inbox_handler,
                             item_handler=lambda item: services.inbox_handler([item]),
                             consumer="test", max_items=64, visibility_s=30.0)
    return done


@contextmanager
def bot_app(settings: Settings, *, store: Store | None = None
            ) -> Iterator[tuple[TestClient, Services]]:
    """The app on its own services (so a test can drive the worker and read profiles)."""
    services = build_services(settings, store=store)
    try:
        with TestClient(create_app(settings, services=services)) as client:
            yield client, services
    finally:
        services.close()


def wecom_app_config(fake: FakeWeCom) -> dict[str, Any]:
    """WeCom settings whose API is the local stand-in (replies land in fake.requests)."""
    return {"corp_id": CORP_ID, "token": TOKEN, "aes_key": AES_KEY, "agent_id": "1000002",
            "secret": fake.secret, "api_base": fake.url}


def load_demo_catalog(services: Services) -> None:
    """Upsert the bundled demo catalog and bring the index up to it."""
    lines = demo_catalog_path().read_text(encoding="utf-8").splitlines()
    services.catalog.upsert([CatalogItem.model_validate(json.loads(x)) for x in lines])
    services.index.refresh()
