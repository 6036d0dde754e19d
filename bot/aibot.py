"""WeCom AI bot (智能机器人): its JSON messages as chat messages, and its reply bodies.

The AI bot speaks encrypted JSON (WECOM.md §1), over an HTTP callback or a long connection.
Both arrive in the inbox as KIND_AIBOT items; this module turns the decrypted body into a
ChatMessage and builds the bodies of its answers. Callbacks fire only for a group message
that @-mentions the bot or for a single chat (WECOM.md §1.0), so every message here is
addressed to the bot.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote, urlsplit

import httpx
from pydantic import ValidationError
from wechatpy.enterprise.crypto import PrpCrypto

from bot.callback import MAX_ELEMENTS, WeComCallback
from bot.dedup import safe_id
from models.errors import BadRequestError, UpstreamError
from models.messages import ChatMessage
from nlp.recommend import Recommendation

# The long-connection process (`mingpian aibot connect`, bot/aibot_ws.py) sends what the
# worker puts here: {"req_id": <the inbound req_id>, "body": <an aibot_respond_msg body>}.
WS_REPLY_QUEUE: Final = "aibot-ws-replies"

# The AI bot's callbacks are signed and encrypted like the app's, with ReceiveId "" for a
# corp's own bot: "企业内部智能机器人场景中，ReceiveId为\"\"" (D101033, WECOM.md §1.1).
RECEIVE_ID: Final = ""
# How long WeCom keeps polling a stream ("从用户发消息开始最多等待6min", D100719) and how long a
# response_url stays valid ("有效期为 1 个小时", D101138): WECOM.md §1.5, §1.6.
STREAM_TTL_S: Final = 6 * 60
RESPONSE_URL_TTL_S: Final = 3600
# Stream content and response_url markdown: at most 20480 bytes of UTF-8 (D101031, D101138).
MAX_CONTENT_BYTES: Final = 20_480
STREAM_NS: Final = "aibot.streams"  # stream id → {"finish", "content"}, kept STREAM_TTL_S
# A real body nests 9 deep (event.template_card_event.selected_items.selected_item[]
# .option_ids.option_id[] values): 12 leaves room, a pathological nest is refused.
_MAX_DEPTH = 12

# Message types whose text we read (WECOM.md §1.3); image / file / video carry only an
# encrypted media URL and become contentless messages of their sender.
_TEXT_TYPES = frozenset({"text", "voice", "mixed"})
_MEDIA_TYPES = frozenset({"image", "file", "video"})
_MAX_TEXT = 20_000
_MAX_TIME = 4_102_444_800  # 2100-01-01 UTC: a later create_time is junk, not a time
# A leading @-mention (half- or full-width @) up to the first space: in a group the content
# starts with the bot's display name, "@RobotA hello robot" (D100719).
_LEADING_MENTION = re.compile(r"^\s*[@＠]\S+\s*")


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def obj(body: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = body.get(key)
    return value if isinstance(value, Mapping) else {}


def sender_of(body: Mapping[str, Any]) -> str:
    """Return the body's from.userid ("" when absent)."""
    return _str(obj(body, "from").get("userid"))


def group_of(body: Mapping[str, Any]) -> str | None:
    """Return the group chat id of a group message, None for a single chat."""
    chat = _str(body.get("chatid"))
    return chat if body.get("chattype") == "group" and chat else None


def text_of(body: Mapping[str, Any]) -> str:
    """Return what the member typed: text / voice (speech recognition) / mixed text parts.
    A quoted message is someone else's words and is left out."""
    msgtype = _str(body.get("msgtype"))
    if msgtype in ("text", "voice"):
        return _str(obj(body, msgtype).get("content"))
    if msgtype == "mixed":
        items = obj(body, "mixed").get("msg_item")
        parts = [_str(obj(it, "text").get("content")) for it in items
                 if isinstance(it, Mapping) and it.get("msgtype") == "text"] \
            if isinstance(items, list) else []
        return "\n".join(p for p in parts if p)
    return ""


def strip_leading_mention(text: str, names: Sequence[str]) -> tuple[str, bool]:
    """Return the text without its leading @bot mention, and whether there was one. A
    configured name is matched first (names may hold spaces); otherwise the first @word."""
    stripped = text.lstrip()
    for n in names:
        for at in ("@", "＠"):
            if n and stripped.startswith(at + n):
                return stripped[len(at + n):].strip(), True
    m = _LEADING_MENTION.match(text)
    if m:
        return text[m.end():].strip(), True
    return text.strip(), False


def is_event(body: Mapping[str, Any]) -> bool:
    """Return whether the body is an event (enter_chat, template_card_event, …)."""
    return body.get("msgtype") == "event"


def event_type(body: Mapping[str, Any]) -> str:
    """Return the event's eventtype ("unknown" when absent)."""
    return _str(obj(body, "event").get("eventtype"))[:48] or "unknown"


def message_from_aibot(body: Mapping[str, Any], *, bot_names: Sequence[str],
                       received_at: int) -> ChatMessage | None:
    """Return the chat message of a decrypted AI-bot callback; None for events, stream
    refreshes and message types we do not read (or a body too broken to be a message)."""
    msgtype = _str(body.get("msgtype"))
    if msgtype not in _TEXT_TYPES and msgtype not in _MEDIA_TYPES:
        return None
    msgid, sender = _str(body.get("msgid")), sender_of(body)
    if not msgid or not sender:
        return None
    text, mentioned = strip_leading_mention(text_of(body), bot_names)
    group = group_of(body)
    create = body.get("create_time")
    ts = create if isinstance(create, int) and 0 < create <= _MAX_TIME else received_at
    try:
        return ChatMessage(
            msg_id=safe_id(f"aibot:{msgid}"), platform="wecom",
            group_id=safe_id(group) if group else None, user_id=safe_id(sender),
            text=text[:_MAX_TEXT], ts=ts, msg_type=msgtype,
            # A group callback only fires on an @-mention; a single chat talks to the bot.
            mentions_bot=mentioned or group is None,
        )
    except ValidationError:
        return None


# -- the HTTP callback: verify, decrypt, parse ----------------------------------------------


def parse_json(data: bytes | str, *, max_values: int = MAX_ELEMENTS) -> dict[str, Any]:
    """Return a JSON object; malformed or hostile JSON is a 400.

    The JSON counterpart of bot.callback.parse_xml: UTF-8 only; the root must be an object;
    a duplicate key at any level is refused (two "encrypt" or two "msgid" are ambiguous);
    NaN and Infinity are refused; more than max_values values (containers included) or
    nesting deeper than 12 is refused. The body is capped in bytes before it gets here, so
    the parse is linear in at most 64 KiB (well under a millisecond)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequestError("body is not UTF-8") from e
    try:
        doc = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError as e:  # thousands of [[[[ … stop Python's parser itself
        raise BadRequestError("JSON nested too deeply") from e
    except ValueError as e:
        if isinstance(e, BadRequestError):
            raise
        raise BadRequestError("malformed JSON") from e
    if not isinstance(doc, dict):
        raise BadRequestError("the JSON body must be an object")
    _count(doc, max_values=max_values)
    return doc


class _RefusedJson(BadRequestError, ValueError):
    """A refusal raised inside json.loads (which only lets ValueError subclasses through)."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise _RefusedJson("duplicate key in JSON object")
    return doc


def _no_constant(name: str) -> float:
    raise _RefusedJson(f"{name} is not JSON")


def _count(doc: object, *, max_values: int) -> None:
    """Refuse a document with more than max_values values or deeper than _MAX_DEPTH."""
    stack: list[tuple[object, int]] = [(doc, 1)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > max_values:
            raise BadRequestError(f"more than {max_values} JSON values")
        if depth > _MAX_DEPTH:
            raise BadRequestError("JSON nested too deeply")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _signature(*parts: str) -> str:
    """Tencent's callback signature: SHA-1 of the sorted parts, concatenated (WECOM.md §1.2)."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


class AibotCallback:
    """The AI bot's HTTP callback: JSON {"encrypt"} bodies and encrypted JSON answers.

    The crypto is wechatpy's WeCom crypto (AES-256-CBC, IV = key[:16], PKCS#7 to 32-byte
    blocks, random(16) + htonl(len) + msg + ReceiveId), with ReceiveId "": the same scheme
    as the app callback (WECOM.md §1.2), so the signature check and decryption are the app
    callback's own (bot.callback.WeComCallback)."""

    def __init__(self, *, token: str, aes_key: str, max_values: int = MAX_ELEMENTS,
                 clock: Callable[[], float] = time.time) -> None:
        self.token = token
        self.max_values = max_values
        self.clock = clock
        self._wecom = WeComCallback(token=token, aes_key=aes_key, corp_id=RECEIVE_ID)

    def verify_url(self, *, msg_signature: str, timestamp: str, nonce: str,
                   echostr: str) -> str:
        """Return the decrypted echostr (answered as bare plaintext) or raise."""
        return self._wecom.verify_url(msg_signature=msg_signature, timestamp=timestamp,
                                      nonce=nonce, echostr=echostr)

    def open(self, body: bytes, *, msg_signature: str, timestamp: str,
             nonce: str) -> dict[str, Any]:
        """Return the decrypted JSON of a POSTed {"encrypt": …} body, its signature verified."""
        envelope = parse_json(body, max_values=self.max_values)
        encrypt = envelope.get("encrypt")
        if not isinstance(encrypt, str) or not encrypt:
            raise BadRequestError('no "encrypt" in the body')
        # msg_signature = sha1(sorted token, timestamp, nonce, encrypt): checked, then
        # decrypted, exactly as the app callback's echostr (a 403 before any decryption).
        plain = self._wecom.verify_url(msg_signature=msg_signature, timestamp=timestamp,
                                       nonce=nonce, echostr=encrypt)
        return parse_json(plain, max_values=self.max_values)

    def encrypt(self, plain: Mapping[str, Any], *, nonce: str,
                timestamp: str | None = None) -> dict[str, Any]:
        """Return the encrypted answer WeCom takes: {"encrypt", "msgsignature", "timestamp",
        "nonce"}; nonce must be the callback's own (WECOM.md §1.5)."""
        ts = timestamp or str(int(self.clock()))
        text = json.dumps(plain, ensure_ascii=False, separators=(",", ":"))
        encrypt = PrpCrypto(self._wecom.crypto.key).encrypt(text, RECEIVE_ID).decode()
        return {"encrypt": encrypt, "msgsignature": _signature(self.token, ts, nonce, encrypt),
                "timestamp": int(ts), "nonce": nonce}


# -- answers -----------------------------------------------------------------------------------


def stream_id(msgid: str) -> str:
    """Return the stream id of the answer to a message: derived from its msgid, so a
    repeated delivery opens (and later polls) the same stream."""
    return hashlib.sha256(f"aibot-stream:{msgid}".encode()).hexdigest()[:32]


def stream_body(sid: str, *, content: str = "", finish: bool = False) -> dict[str, Any]:
    """Return a stream reply body: the full text so far (each one replaces the last)."""
    return {"msgtype": "stream",
            "stream": {"id": sid, "finish": finish, "content": clip(content)}}


def markdown_body(content: str) -> dict[str, Any]:
    """Return a response_url body: one markdown message (D101138)."""
    return {"msgtype": "markdown", "markdown": {"content": clip(content)}}


def clip(content: str) -> str:
    """Return content cut to MAX_CONTENT_BYTES of UTF-8 at a character boundary."""
    raw = content.encode()
    if len(raw) <= MAX_CONTENT_BYTES:
        return content
    return raw[:MAX_CONTENT_BYTES].decode("utf-8", errors="ignore")


_SHARE_PATH = re.compile(r"^/s/([A-Za-z0-9_-]{1,32})/?$")


def item_link(item: Recommendation, *, card_url: str | None) -> str:
    """Return the item's link: through the card's share code (GET /r/{code}/{item_id}, which
    records the click and adds ref=code) when the card link is a share link (/s/{code}),
    else the item's own mall URL."""
    if card_url:
        parts = urlsplit(card_url)
        share = _SHARE_PATH.match(parts.path)
        if share and parts.scheme in ("http", "https"):
            return f"{parts.scheme}://{parts.netloc}/r/{share.group(1)}/{quote(item.id, safe='')}"
    return item.url


def _md(text: str) -> str:
    # Item titles come from the mall: keep them from opening links or emphasis.
    return re.sub(r"([\\\[\]()*_`<>])", r"\\\1", text)


def render_markdown(items: Sequence[Recommendation], card_url: str | None,
                    user_name: str | None) -> str:
    """Return the AI bot's answer as markdown: each item with its price and tracked link,
    then the card link."""
    lines = [f"**@{_md(user_name)} 为你推荐：**" if user_name else "**为你推荐：**"]
    for n, it in enumerate(items, 1):
        price = f" ¥{it.price_cents // 100}.{it.price_cents % 100:02d}" if it.price_cents else ""
        link = item_link(it, card_url=card_url)
        title = f"[{_md(it.title)}]({link})" if link else _md(it.title)
        lines.append(f"{n}. {title}{price}")
    if card_url:
        lines.append(f"\n[有问题随时找我]({card_url})")
    return "\n".join(lines)


def post_response_url(http: httpx.Client, url: str, content: str) -> None:
    """POST one markdown message to a response_url (usable once); raise UpstreamError when
    WeCom refuses it or cannot be reached."""
    if not url.startswith(("https://", "http://")):
        raise UpstreamError("response_url is not an http(s) URL")
    try:
        resp = http.post(url, json=markdown_body(content))
        answer = resp.json()
    except (httpx.HTTPError, ValueError) as e:
        raise UpstreamError(f"response_url: {type(e).__name__}") from e
    code = answer.get("errcode", 0) if isinstance(answer, dict) else -1
    if not resp.is_success or code:
        raise UpstreamError(f"response_url: HTTP {resp.status_code}, errcode {code}",
                            details={"errcode": code})
