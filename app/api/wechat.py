"""WeChat Official Account and WeCom callbacks (CONTRACTS §1).

The hot path: verify, decrypt, parse, queue durably, answer. WeChat gives up after 5 s and
retries; nothing slow (tagging, profiles, replies) happens before the answer. A bad
signature is a 403; an undecryptable, malformed or hostile body a 400; a body over the
limit a 413 (app/limits.py) — and none of them queues anything.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from app.bot_wiring import BotKit
from app.deps import ServicesDep
from bot.callback import OfficialAccountCallback, WeComCallback, XmlDoc
from bot.inbox import Source
from models.errors import NotFoundError

router = APIRouter(tags=["wechat"])


def _kit(services: ServicesDep) -> BotKit:
    if services.bot is None:
        raise NotFoundError("the bot is not set up")
    return services.bot


BotDep = Annotated[BotKit, Depends(_kit)]


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


def _query_doc(*names: str) -> dict[str, object]:
    return {"parameters": [{"name": n, "in": "query", "required": False,
                            "schema": {"type": "string"}} for n in names],
            "requestBody": {"required": True,
                            "content": {"text/xml": {"schema": {"type": "string"}}}}}


async def _accept(bot: BotKit, source: Source, fields: XmlDoc) -> None:
    """Queue durably; only then may the caller answer."""
    if bot.inbox.store.backend == "redis":
        # A network round trip: let the event loop serve other callbacks meanwhile.
        await run_in_threadpool(bot.inbox.accept_platform, source, fields)
    else:
        # One short local SQLite transaction (~60 µs), cheaper inline than a thread hop.
        # Every callback needs the same write lock, so waiting for it here holds up no
        # callback that could otherwise have been acknowledged.
        bot.inbox.accept_platform(source, fields)


# The two POST handlers are the hot path (WeChat gives up after 5 s; we aim for
# milliseconds): they read the request directly rather than through FastAPI's dependency
# and thread-pool machinery, and do ~100 µs of crypto and one store write.


@router.post("/wecom/callback", response_class=Response,
             openapi_extra=_query_doc("msg_signature", "timestamp", "nonce"))
async def wecom_receive(request: Request) -> Response:
    """Receive an encrypted WeCom message or event; empty 200 once it is durably queued."""
    bot = _kit(request.state.services)
    body = await request.body()
    q = request.query_params
    fields = _wecom(bot).open(body, msg_signature=q.get("msg_signature", ""),
                              timestamp=q.get("timestamp", ""), nonce=q.get("nonce", ""))
    await _accept(bot, "wecom", fields)
    return Response()


@router.get("/wechat/callback", response_class=PlainTextResponse)
def wechat_verify(bot: BotDep, signature: str = "", timestamp: str = "", nonce: str = "",
                  echostr: str = "") -> PlainTextResponse:
    """The Official Account's URL check: verify signature, echo echostr."""
    return PlainTextResponse(_wechat(bot).verify_url(signature=signature, timestamp=timestamp,
                                                     nonce=nonce, echostr=echostr))


@router.post("/wechat/callback", response_class=PlainTextResponse,
             openapi_extra=_query_doc("signature", "timestamp", "nonce", "encrypt_type",
                                      "msg_signature", "openid"))
async def wechat_receive(request: Request) -> PlainTextResponse:
    """Receive an Official Account message (plaintext, compatible or safe mode)."""
    bot = _kit(request.state.services)
    body = await request.body()
    q = request.query_params
    fields = _wechat(bot).open(body, signature=q.get("signature", ""),
                               timestamp=q.get("timestamp", ""), nonce=q.get("nonce", ""),
                               encrypt_type=q.get("encrypt_type", ""),
                               msg_signature=q.get("msg_signature", ""))
    await _accept(bot, "wechat", fields)
    # "success" tells WeChat not to retry and not to show "该公众号暂时无法提供服务".
    return PlainTextResponse("success")
