"""Platform send APIs: WeCom app messages, group chats and group robots; Official Account
customer-service messages. One access token per app, shared through the store.

Every refresh of an access_token invalidates the previous one, so processes that refresh on
their own break each other (40001/42001 storms, reported across wechat-python-sdk #70,
Eric-Guo/wechat #76, easywechat #129). Here the token lives in the store, one process
refreshes it under a store lock, and a 40001/42001 answer leads to one refresh and one retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from models.errors import UpstreamError
from store import Store

log = logging.getLogger("mingpian.platform")

TOKEN_NS = "bot.tokens"
# 40001 invalid credential, 40014 invalid access_token, 42001 access_token expired.
STALE_TOKEN_CODES = frozenset({40001, 40014, 42001})
# WeCom's group robot takes at most 2048 bytes of text (reported).
WEBHOOK_MAX_BYTES = 2048


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError as e:
        raise UpstreamError(f"{resp.url.path}: HTTP {resp.status_code}, not JSON") from e
    if not isinstance(body, dict):
        raise UpstreamError(f"{resp.url.path}: unexpected answer")
    return body


class PlatformError(UpstreamError):
    """The platform answered with a non-zero errcode."""

    def __init__(self, path: str, errcode: int, errmsg: str) -> None:
        super().__init__(f"{path}: {errcode} {errmsg}", details={"errcode": errcode})
        self.errcode = errcode


def _check(path: str, body: dict[str, Any]) -> dict[str, Any]:
    code = int(body.get("errcode", 0) or 0)
    if code != 0:
        raise PlatformError(path, code, str(body.get("errmsg", "")))
    return body


class TokenCache:
    """An access token shared by every process through the store; one refresher at a time."""

    def __init__(self, store: Store, *, name: str, fetch: Callable[[], tuple[str, int]],
                 clock: Callable[[], float] = time.time, margin_s: int = 300,
                 lock_wait_s: float = 30.0) -> None:
        self.store = store
        self.name = name
        self.fetch = fetch
        self.clock = clock
        self.margin_s = margin_s
        self.lock_wait_s = lock_wait_s

    def _cached(self) -> str | None:
        rec = self.store.get(TOKEN_NS, self.name)
        if rec is None or float(rec.doc.get("expires_at", 0)) - self.margin_s <= self.clock():
            return None
        return str(rec.doc["token"])

    def get(self) -> str:
        """Return a valid token, fetching one (once, whoever asks) when none is cached."""
        return self._cached() or self._refresh(stale=None)

    def refresh(self, stale: str) -> str:
        """Replace a token the platform rejected; if another process already did, use theirs."""
        return self._refresh(stale=stale)

    def _refresh(self, *, stale: str | None) -> str:
        with self.store.lock(f"token:{self.name}", ttl_s=60, wait_s=self.lock_wait_s) as got:
            if not got:
                raise UpstreamError(f"timed out waiting for the {self.name} token refresh")
            current = self._cached()
            if current is not None and current != stale:
                return current
            token, expires_in = self.fetch()
            now = self.clock()
            self.store.put(TOKEN_NS, self.name,
                           {"token": token, "expires_at": now + expires_in, "fetched_at": now},
                           ttl_s=max(1, int(expires_in)))
            log.info("fetched a new %s access token (expires in %ss)", self.name, expires_in)
            return token


class _TokenClient:
    """POST JSON to `path?access_token=…`, with one refresh-and-retry on a stale token."""

    def __init__(self, http: httpx.Client, base: str, tokens: TokenCache) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self.tokens = tokens

    def _get_json(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        try:
            resp = self.http.get(self.base + path, params=params)
        except httpx.HTTPError as e:
            raise UpstreamError(f"{path}: {type(e).__name__}") from e
        return _check(path, _json(resp))

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        token = self.tokens.get()
        try:
            return self._post_once(path, payload, token)
        except PlatformError as e:
            if e.errcode not in STALE_TOKEN_CODES:
                raise
            log.warning("%s: token rejected (%s); refreshing once", path, e.errcode)
        return self._post_once(path, payload, self.tokens.refresh(token))

    def _post_once(self, path: str, payload: dict[str, Any], token: str) -> dict[str, Any]:
        try:
            resp = self.http.post(self.base + path, params={"access_token": token},
                                  json=payload)
        except httpx.HTTPError as e:
            raise UpstreamError(f"{path}: {type(e).__name__}") from e
        return _check(path, _json(resp))


class WeComClient(_TokenClient):
    """WeCom self-built app: gettoken, message/send, appchat/send; group-robot webhook."""

    def __init__(self, store: Store, http: httpx.Client, *, api_base: str, corp_id: str,
                 secret: str, agent_id: str, webhook_key: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.corp_id = corp_id
        self.secret = secret
        self.agent_id = agent_id
        self.webhook_key = webhook_key
        tokens = TokenCache(store, name=f"wecom:{corp_id}:{agent_id}", fetch=self._fetch,
                            clock=clock)
        super().__init__(http, api_base, tokens)

    def _fetch(self) -> tuple[str, int]:
        body = self._get_json("/cgi-bin/gettoken",
                              {"corpid": self.corp_id, "corpsecret": self.secret})
        return str(body["access_token"]), int(body.get("expires_in", 7200))

    def send_text(self, *, to_user: str, text: str) -> None:
        """Send a text message from the app to one member (message/send)."""
        self.post("/cgi-bin/message/send", {
            "touser": to_user, "msgtype": "text", "agentid": _int_or_str(self.agent_id),
            "text": {"content": text},
            # WeCom drops an identical message to the same user within the interval: a
            # second line of defence behind our own once-marker.
            "enable_duplicate_check": 1, "duplicate_check_interval": 1800,
        })

    def send_group_text(self, *, chat_id: str, text: str) -> None:
        """Send a text message to an app group chat (appchat/send)."""
        self.post("/cgi-bin/appchat/send",
                  {"chatid": chat_id, "msgtype": "text", "text": {"content": text}})

    def send_webhook_text(self, *, text: str, key: str | None = None) -> None:
        """Post a text message through a group robot's webhook (no access token)."""
        key = key or self.webhook_key
        if not key:
            raise UpstreamError("no group-robot webhook key is configured")
        path = "/cgi-bin/webhook/send"
        data = text.encode()
        if len(data) > WEBHOOK_MAX_BYTES:
            text = data[:WEBHOOK_MAX_BYTES - 3].decode("utf-8", "ignore") + "…"
        try:
            resp = self.http.post(self.base + path, params={"key": key},
                                  json={"msgtype": "text", "text": {"content": text}})
        except httpx.HTTPError as e:
            raise UpstreamError(f"{path}: {type(e).__name__}") from e
        _check(path, _json(resp))


class OfficialAccountClient(_TokenClient):
    """Official Account: token and customer-service messages (message/custom/send)."""

    def __init__(self, store: Store, http: httpx.Client, *, api_base: str, app_id: str,
                 app_secret: str, clock: Callable[[], float] = time.time) -> None:
        self.app_id = app_id
        self.app_secret = app_secret
        tokens = TokenCache(store, name=f"wechat:{app_id}", fetch=self._fetch, clock=clock)
        super().__init__(http, api_base, tokens)

    def _fetch(self) -> tuple[str, int]:
        body = self._get_json("/cgi-bin/token", {"grant_type": "client_credential",
                                                 "appid": self.app_id,
                                                 "secret": self.app_secret})
        return str(body["access_token"]), int(body.get("expires_in", 7200))

    def send_text(self, *, to_user: str, text: str) -> None:
        """Send a customer-service text message to a follower (within 48 h of their message)."""
        self.post("/cgi-bin/message/custom/send",
                  {"touser": to_user, "msgtype": "text", "text": {"content": text}})


def _int_or_str(value: str) -> int | str:
    return int(value) if value.isdigit() else value
