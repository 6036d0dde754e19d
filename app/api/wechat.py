"""WeChat Official Account and WeCom callbacks (CONTRACTS §1).

The hot path: verify, decrypt, parse, queue durably, answer. WeChat gives up after 5 s and
retries; nothing slow (tagging, profiles, replies) happens before the answer. A bad
signature is a 403; an undecryptable, malformed or hostile body a 400; a body over
MINGPIAN_MAX_CALLBACK_BYTES a 413 (app/limits.py) — and none of them queues anything.

The URL checks (GET) are FastAPI routes. The POSTs (the AI bot's too, app/api/aibot.py)
are answered by CallbackPosts alone, ahead of FastAPI's middleware stack and routing
(together a third of a callback's CPU time, measured); the app (app/main.py) hands it every
request first, and its OpenAPI entries are written here by hand (POSTS, document_posts),
next to the code they describe.

Nothing here is handed to a thread: the body is capped in bytes (64 KiB by default) and in
XML elements (bot/callback.py), and every step is linear, so the worst body costs about a
millisecond of the event loop — less than the round trip to a thread pool would.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from app.api import aibot
from app.bot_wiring import BotKit
from app.deps import BotDep
from app.errors import error_response
from app.limits import TOO_LARGE, declared_too_big, read_body
from app.metrics import Metrics
from bot.callback import OfficialAccountCallback, WeComCallback
from models.errors import NotFoundError, PayloadTooLargeError

router = APIRouter(tags=["wechat"])


def _wecom(bot: BotKit) -> WeComCallback:
    if bot.wecom is None:
        raise NotFoundError("WeCom is not configured (MINGPIAN_WECOM__*)")
    return bot.wecom


def _wechat(bot: BotKit) -> OfficialAccountCallback:
    if bot.wechat is None:
        raise NotFoundError("the Official Account is not configured (MINGPIAN_WECHAT__*)")
    return bot.wechat


@router.get("/wecom/callback", response_class=PlainTextResponse)
def wecom_verify(bot: BotDep, msg_signature: str = "", timestamp: str = "", nonce: str = "",
                 echostr: str = "") -> PlainTextResponse:
    """WeCom's URL check: verify msg_signature, decrypt echostr, return the plaintext."""
    plain = _wecom(bot).verify_url(msg_signature=msg_signature, timestamp=timestamp,
                                   nonce=nonce, echostr=echostr)
    return PlainTextResponse(plain)


@router.get("/wechat/callback", response_class=PlainTextResponse)
def wechat_verify(bot: BotDep, signature: str = "", timestamp: str = "", nonce: str = "",
                  echostr: str = "") -> PlainTextResponse:
    """The Official Account's URL check: verify signature, echo echostr."""
    return PlainTextResponse(_wechat(bot).verify_url(signature=signature, timestamp=timestamp,
                                                     nonce=nonce, echostr=echostr))


# -- the hot path ---------------------------------------------------------------------------
# WeChat gives up after 5 s; we aim for milliseconds: verify, decrypt, parse, then queue
# durably (the write shared with every callback that arrived meanwhile), then answer.

Query = Mapping[str, str]


async def receive_wecom(bot: BotKit, body: bytes, q: Query) -> bytes:
    """Open a WeCom callback and queue it; return the answer's body (empty)."""
    fields = _wecom(bot).open(body, msg_signature=q.get("msg_signature", ""),
                              timestamp=q.get("timestamp", ""), nonce=q.get("nonce", ""))
    await bot.inbox.accept_platform("wecom", fields)
    return b""


async def receive_wechat(bot: BotKit, body: bytes, q: Query) -> bytes:
    """Open an Official Account callback and queue it; return the answer's body."""
    fields = _wechat(bot).open(body, signature=q.get("signature", ""),
                               timestamp=q.get("timestamp", ""), nonce=q.get("nonce", ""),
                               encrypt_type=q.get("encrypt_type", ""),
                               msg_signature=q.get("msg_signature", ""),
                               openid=q.get("openid", ""))
    await bot.inbox.accept_platform("wechat", fields)
    # "success" tells WeChat not to retry and not to show "该公众号暂时无法提供服务".
    return b"success"


Receiver = Callable[[BotKit, bytes, Query], Awaitable[bytes]]


@dataclass(frozen=True)
class _Post:
    """One callback POST: who opens it, its answer's content type, its OpenAPI entry."""

    receive: Receiver
    content_type: bytes | None
    doc: dict[str, Any]


def _doc(*, name: str, path: str, summary: str, description: str, query: tuple[str, ...],
         answer: dict[str, Any], body_type: str = "text/xml") -> dict[str, Any]:
    """Return the OpenAPI operation FastAPI would write for this POST as a route."""
    return {
        "tags": ["wechat"], "summary": summary, "description": description,
        "operationId": f"{name}{path.replace('/', '_')}_post",
        "responses": {"200": {"description": "Successful Response", **answer}},
        "parameters": [{"name": n, "in": "query", "required": False,
                        "schema": {"type": "string"}} for n in query],
        "requestBody": {"required": True,
                        "content": {body_type: {"schema": {"type": "string"}}}},
    }


POSTS: dict[str, _Post] = {
    "/wecom/callback": _Post(receive_wecom, None, _doc(
        name="wecom_receive", path="/wecom/callback", summary="Wecom Receive",
        description="Receive an encrypted WeCom message or event; empty 200 once it is "
        "durably queued.",
        query=("msg_signature", "timestamp", "nonce"), answer={})),
    "/wechat/callback": _Post(receive_wechat, b"text/plain; charset=utf-8", _doc(
        name="wechat_receive", path="/wechat/callback", summary="Wechat Receive",
        description="Receive an Official Account message (plaintext, compatible or safe "
        "mode).",
        query=("signature", "timestamp", "nonce", "encrypt_type", "msg_signature", "openid"),
        answer={"content": {"text/plain": {"schema": {"type": "string"}}}})),
    aibot.PATH: _Post(aibot.receive_aibot, b"application/json", _doc(
        name="aibot_receive", path=aibot.PATH, summary="Aibot Receive",
        description='Receive an encrypted WeCom AI-bot callback, JSON {"encrypt": …}; empty '
        "200 once it is durably queued, or the encrypted stream reply in stream mode.",
        query=("msg_signature", "timestamp", "nonce"), body_type="application/json",
        answer={"content": {"application/json": {"schema": {"type": "object"}}}})),
}


def document_posts(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the callback POSTs, which no FastAPI route answers, to an OpenAPI schema."""
    for path, post in POSTS.items():
        schema.setdefault("paths", {}).setdefault(path, {})["post"] = post.doc
    return schema


class CallbackPosts:
    """Answers the callback POSTs, the only code that does. The body limit, the metrics
    and the error responses are the same as everywhere else (app/limits.py, app/metrics.py,
    app/errors.py); the body cap is the callbacks' own, max_callback_bytes, far below the
    rest of the API's."""

    def __init__(self, *, metrics: Metrics, max_bytes: int) -> None:
        self.metrics = metrics
        self.max_bytes = max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer a callback POST and return True; return False for any other request."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        path: str = scope["path"]
        post = POSTS.get(path)
        if post is None:
            return False
        start = time.perf_counter()
        status = 200
        try:
            if declared_too_big(scope, self.max_bytes):
                raise PayloadTooLargeError(TOO_LARGE)
            body = await read_body(receive, self.max_bytes)
            if body is None:
                return True  # the client went away before sending its body
            query = dict(parse_qsl(scope["query_string"].decode("latin-1"),
                                   keep_blank_values=True))
            answer = await post.receive(scope["state"]["services"].bot, body, query)
        except Exception as exc:  # noqa: BLE001 - mapped exactly as the app maps it
            error = error_response(exc)
            status = error.status_code
            await error(scope, receive, send)
        else:
            headers = [(b"content-length", str(len(answer)).encode())]
            if post.content_type is not None and answer:
                headers.append((b"content-type", post.content_type))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": answer})
        finally:
            self.metrics.observe_request(path, status, time.perf_counter() - start)
        return True
