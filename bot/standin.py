"""A local stand-in for the WeCom and Official Account APIs the bot calls.

WeCom's servers cannot be reached from tests or from `mingpian demo`; this real HTTP server
speaks their protocol on 127.0.0.1, so the bot's platform client talks to it exactly as to
qyapi.weixin.qq.com / api.weixin.qq.com. Like the real platforms, fetching a new token
invalidates the previous one; a wrong token gets 40014. `fail_next(40001)` makes the next
send answer 40001 (or 42001) once. Every request is recorded.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bot.archive.standin import ArchiveStandIn
from bot.standin_contacts import ContactsStandIn

AIBOT_RESPONSE_PATH = "/cgi-bin/aibot/response"  # the AI bot's response_url (D101138)
SEND_PATHS = ("/cgi-bin/message/send", "/cgi-bin/appchat/send", "/cgi-bin/message/custom/send")


@dataclass(frozen=True)
class Recorded:
    """One request the server saw."""

    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any] | None


class WeComStandIn:
    """WeCom + Official Account API stand-in on 127.0.0.1."""

    def __init__(self, *, corp_id: str = "wwcorp", secret: str = "s3cret",
                 app_id: str = "wxapp", app_secret: str = "appsecret",
                 webhook_key: str = "robot-key", token_delay_s: float = 0.0,
                 expires_in: int = 7200, port: int = 0) -> None:
        self.corp_id, self.secret = corp_id, secret
        self.app_id, self.app_secret = app_id, app_secret
        self.webhook_key = webhook_key
        self.token_delay_s = token_delay_s
        self.expires_in = expires_in
        self.requests: list[Recorded] = []
        self.token_calls = 0
        self._serial = 0
        self.current_token: str | None = None
        self._fail: list[int] = []
        # AI-bot response_urls minted by response_url(): code → used yet (one use each).
        self._response_codes: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)
        # Customer contacts: tags, 联系我, OAuth, JS-SDK (issue 15, bot/standin_contacts.py).
        self.contacts = ContactsStandIn(self)
        # The chat archive's check_single_agree and groupchat/get (issue 14, bot/archive/).
        self.archive = ArchiveStandIn(lambda token: token == self.current_token)

    # -- control -------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> WeComStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.running:
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WeComStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def response_url(self) -> str:
        """Return a fresh AI-bot response_url on this server (usable once, like WeCom's)."""
        with self._lock:
            code = f"rc-{len(self._response_codes) + 1}"
            self._response_codes[code] = False
        return f"{self.url}{AIBOT_RESPONSE_PATH}?response_code={code}"

    def aibot_responses(self) -> list[dict[str, Any]]:
        """Return the bodies of the response_url POSTs that were accepted, in order."""
        return [r.body for r in self.sent(AIBOT_RESPONSE_PATH)
                if r.body is not None and r.query.get("accepted") == "1"]

    def fail_next(self, errcode: int, times: int = 1) -> None:
        """Make the next `times` send calls answer errcode."""
        with self._lock:
            self._fail.extend([errcode] * times)

    def sent(self, path: str | None = None) -> list[Recorded]:
        """Return the send requests (of one path, or all) that succeeded or not."""
        return [r for r in self.requests
                if r.method == "POST" and (path is None or r.path == path)]

    def sent_texts(self) -> list[tuple[str, str]]:
        """Return (chat id or user, text) of every text message sent successfully so far."""
        out = []
        for r in self.sent():
            if r.path in SEND_PATHS and r.body and r.body.get("text"):
                to = str(r.body.get("chatid") or r.body.get("touser") or "")
                out.append((to, str(r.body["text"].get("content", ""))))
        return out

    # -- protocol ------------------------------------------------------------
    def _new_token(self) -> dict[str, Any]:
        if self.token_delay_s:
            time.sleep(self.token_delay_s)  # widen the window for concurrent refreshers
        with self._lock:
            self.token_calls += 1
            self._serial += 1
            # A new token invalidates the previous one, as on the real platforms.
            self.current_token = f"tok-{self._serial}"
            return {"errcode": 0, "errmsg": "ok", "access_token": self.current_token,
                    "expires_in": self.expires_in}

    def answer(self, method: str, path: str, query: dict[str, str],
               body: dict[str, Any] | None) -> dict[str, Any]:
        if method == "POST" and path == AIBOT_RESPONSE_PATH:
            return self._aibot_response(query, body)
        with self._lock:
            self.requests.append(Recorded(method, path, query, body))
        if method == "GET" and path in ("/cgi-bin/gettoken", "/cgi-bin/token"):
            return self._token(path, query)
        if method == "POST" and path == "/cgi-bin/webhook/send":
            if query.get("key") != self.webhook_key:
                return {"errcode": 93000, "errmsg": "invalid webhook url"}
            return {"errcode": 0, "errmsg": "ok"}
        if method == "POST" and path in SEND_PATHS:
            return self._send(query, body)
        # Tags, contacts, 联系我, OAuth (bot/standin_contacts.py), else unknown.
        return (self.archive.answer(method, path, query, body)
                or self.contacts.answer(method, path, query, body)
                or {"errcode": 404, "errmsg": f"unknown api {method} {path}"})

    def _aibot_response(self, query: dict[str, str],
                        body: dict[str, Any] | None) -> dict[str, Any]:
        # "每个 response_url 用户可以调用接口一次" (D101138): a second use is refused. The
        # errcode for a reused or unknown code is not documented; 40001-style codes are not
        # it, so this one is the stand-in's own.
        content = (body or {}).get("markdown", {}).get("content") \
            if isinstance((body or {}).get("markdown"), dict) else None
        with self._lock:
            code = query.get("response_code", "")
            fresh = self._response_codes.get(code) is False
            ok = fresh and (body or {}).get("msgtype") == "markdown" and bool(content)
            if ok:
                self._response_codes[code] = True
            self.requests.append(Recorded("POST", AIBOT_RESPONSE_PATH,
                                          {**query, "accepted": "1" if ok else "0"}, body))
        if not fresh:
            return {"errcode": 600_001, "errmsg": "invalid or used response_code"}
        if not ok:
            return {"errcode": 40008, "errmsg": "invalid message type"}
        return {"errcode": 0, "errmsg": "ok"}

    def _token(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        if path == "/cgi-bin/gettoken":
            if query.get("corpid") != self.corp_id or query.get("corpsecret") != self.secret:
                return {"errcode": 40001, "errmsg": "invalid credential"}
        elif query.get("appid") != self.app_id or query.get("secret") != self.app_secret:
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        return self._new_token()

    def _send(self, query: dict[str, str], body: dict[str, Any] | None) -> dict[str, Any]:
        with self._lock:
            if self._fail:
                code = self._fail.pop(0)
                return {"errcode": code, "errmsg": "injected failure"}
            if query.get("access_token") != self.current_token:
                return {"errcode": 40014, "errmsg": "invalid access_token"}
        if not body or body.get("msgtype") != "text" or not body.get("text", {}).get(
                "content"):
            return {"errcode": 40008, "errmsg": "invalid message type"}
        return {"errcode": 0, "errmsg": "ok", "invaliduser": ""}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                query = dict(parse_qsl(parts.query))
                raw = fake.contacts.answer_raw(method, parts.path, query)
                if raw is not None:  # a redirect, a PNG or a script (bot/standin_contacts.py)
                    with fake._lock:
                        fake.requests.append(Recorded(method, parts.path, query, None))
                    self.send_response(raw[0])
                    for name, value in raw[1].items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(raw[2])))
                    self.end_headers()
                    self.wfile.write(raw[2])
                    return
                body: dict[str, Any] | None = None
                length = int(self.headers.get("content-length") or 0)
                if length:
                    body = json.loads(self.rfile.read(length))
                data = json.dumps(fake.answer(method, parts.path, query, body)).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
