"""The WeCom AI bot's HTTP callback, /wecom/aibot/callback (CONTRACTS §1, WECOM.md §1).

The GET (URL check) is a FastAPI route; the POST is answered by CallbackPosts
(app/api/wechat.py) like the app callbacks: body capped in bytes, JSON capped in values,
the same error mapping and metrics. A message is acknowledged only once it is durably
queued (deduplicated on its msgid); everything else happens in the worker.

Answers to a POST (WECOM.md §1.5):
- a message, reply_mode "response_url": empty; the worker POSTs the answer to response_url;
- a message with text, reply_mode "stream": the encrypted stream reply that opens the
  stream (id derived from the msgid, so a repeated delivery gets the same stream), content
  so far (none yet, or the answer when the worker was quicker);
- a stream refresh (msgtype "stream"): the stream's full text so far, finish=true once the
  worker has answered, or has decided to stay silent (then with no content); never queued;
- an event (enter_chat, template_card_event, feedback_event): queued (counted by the
  worker), answered empty (the only answer feedback_event allows).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from app.bot_wiring import BotKit
from app.deps import BotDep
from bot import aibot
from bot.aibot import AibotCallback
from models.errors import BadRequestError, NotFoundError
from store import Store

router = APIRouter(tags=["wechat"])

PATH = "/wecom/aibot/callback"


def _aibot(bot: BotKit) -> AibotCallback:
    if bot.aibot is None:
        raise NotFoundError("the WeCom AI bot's callback is not configured "
                            "(MINGPIAN_WECOM_AIBOT__TOKEN, MINGPIAN_WECOM_AIBOT__AES_KEY)")
    return bot.aibot


@router.get(PATH, response_class=PlainTextResponse)
def aibot_verify(bot: BotDep, msg_signature: str = "", timestamp: str = "", nonce: str = "",
                 echostr: str = "") -> PlainTextResponse:
    """The AI bot's URL check: verify msg_signature, decrypt echostr (ReceiveId ""), return
    the bare plaintext."""
    plain = _aibot(bot).verify_url(msg_signature=msg_signature, timestamp=timestamp,
                                   nonce=nonce, echostr=echostr)
    return PlainTextResponse(plain)


def stream_state(store: Store, sid: str) -> dict[str, Any]:
    """Return a stream's reply body as it stands: the answer once written, else open."""
    rec = store.get(aibot.STREAM_NS, sid)
    if rec is None:
        return aibot.stream_body(sid)
    return aibot.stream_body(sid, content=str(rec.doc.get("content", "")),
                             finish=bool(rec.doc.get("finish")))


async def receive_aibot(bot: BotKit, body: bytes, q: Mapping[str, str]) -> bytes:
    """Open an AI-bot callback and queue it; return the answer's body (see the module)."""
    cb = _aibot(bot)
    nonce = q.get("nonce", "")
    doc = cb.open(body, msg_signature=q.get("msg_signature", ""),
                  timestamp=q.get("timestamp", ""), nonce=nonce)
    if doc.get("msgtype") == "stream":
        # WeCom asking for more of a stream we opened: not a message, nothing queued.
        sid = aibot.obj(doc, "stream").get("id")
        if not isinstance(sid, str) or not sid:
            raise BadRequestError("a stream refresh without stream.id")
        return _answer(cb, stream_state(bot.inbox.store, sid[:128]), nonce)
    msgid = doc.get("msgid")
    if not isinstance(msgid, str) or not msgid:
        raise BadRequestError("an AI-bot callback without msgid")
    fresh = await bot.inbox.accept_aibot(doc, channel="http")
    if bot.aibot_reply_mode != "stream" or aibot.is_event(doc) or not _has_text(doc):
        return b""
    sid = aibot.stream_id(msgid)
    # A repeated delivery: the worker may have answered already.
    state = aibot.stream_body(sid) if fresh else stream_state(bot.inbox.store, sid)
    return _answer(cb, state, nonce)


def _has_text(doc: Mapping[str, Any]) -> bool:
    msg = aibot.message_from_aibot(doc, bot_names=(), received_at=0)
    return msg is not None and bool(msg.text.strip())


def _answer(cb: AibotCallback, plain: Mapping[str, Any], nonce: str) -> bytes:
    return json.dumps(cb.encrypt(plain, nonce=nonce), separators=(",", ":")).encode()
