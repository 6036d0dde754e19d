"""The bot's objects for one process, built from settings (only app/ reads settings)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from app.group_links import card_links_for
from app.settings import Settings
from bot import aibot
from bot.aibot import AibotCallback
from bot.callback import OfficialAccountCallback, WeComCallback
from bot.group_settings import GroupSettingsRepo
from bot.handlers import InboxHandler
from bot.inbox import Inbox
from bot.platform import OfficialAccountClient, WeComClient
from bot.replies import Renderer, Replier, ReplyPolicy, Sender
from bot.routing import (
    AIBOT_RESPONSE_URL,
    AIBOT_STREAM,
    AIBOT_WS,
    WECHAT_CUSTOM,
    WECOM_APPCHAT,
    WECOM_USER,
    WECOM_WEBHOOK,
)
from nlp.identity import canonical_of
from nlp.pipeline import MessagePipeline
from nlp.recommend import Recommender
from store import Store

log = logging.getLogger("mingpian.bot")


@dataclass(frozen=True)
class BotKit:
    """Callbacks (HTTP side), the inbox, and the worker's handler and senders.

    The WeCom and Official Account parts are None when their settings are absent."""

    inbox: Inbox
    replier: Replier
    handler: InboxHandler
    http: httpx.Client
    wecom: WeComCallback | None = None
    wechat: OfficialAccountCallback | None = None
    wecom_client: WeComClient | None = None
    wechat_client: OfficialAccountClient | None = None
    aibot: AibotCallback | None = None  # the AI bot's HTTP callback (MINGPIAN_WECOM_AIBOT__*)
    aibot_reply_mode: str = "response_url"

    def close(self) -> None:
        """Finish the inbox's write in flight; release the HTTP connection pool."""
        self.inbox.close()
        self.http.close()


def reply_policy(settings: Settings) -> ReplyPolicy:
    """Return the reply policy's plain values."""
    r = settings.reply
    names = tuple(settings.wecom.bot_names) if settings.wecom is not None else ("名片助手",)
    if settings.wecom_aibot is not None:  # the AI bot's names are the bot's too
        names = tuple(dict.fromkeys((*names, *settings.wecom_aibot.bot_names)))
    return ReplyPolicy(
        enabled=r.enabled, min_interval_s=r.min_interval_s, quiet_start_hour=r.quiet_start_hour,
        quiet_end_hour=r.quiet_end_hour, tz_offset_hours=settings.tz_offset_hours,
        confidence=r.confidence, max_items=r.max_items, card_url=r.card_url, bot_names=names,
        bot_user_ids=frozenset(r.bot_user_ids), dedup_ttl_s=settings.dedup_ttl_days * 86_400,
    )


def build_bot(settings: Settings, store: Store, *, queue: str, pipeline: MessagePipeline,
              recommender: Recommender) -> BotKit:
    """Build the bot for this process: callbacks and clients for the configured platforms,
    the inbox, and the worker's handler over the pipeline."""
    ttl = settings.dedup_ttl_days * 86_400
    http = httpx.Client(timeout=10.0)
    senders: dict[str, Sender] = {}
    renderers: dict[str, Renderer] = {}
    replier = Replier(store=store, policy=reply_policy(settings), recommender=recommender,
                      senders=senders, renderers=renderers,
                      # Per-group card and reply settings; links through the card (issue 15).
                      groups=GroupSettingsRepo(store),
                      card_links=card_links_for(settings, store),
                      canonical=lambda user_id: canonical_of(store, user_id))
    group_channel = WECOM_APPCHAT
    wecom: WeComCallback | None = None
    wecom_client: WeComClient | None = None
    if settings.wecom is not None:
        w = settings.wecom
        wecom = WeComCallback(token=w.token.get_secret_value(),
                              aes_key=w.aes_key.get_secret_value(), corp_id=w.corp_id,
                              max_elements=settings.max_callback_elements)
        webhook = w.robot_webhook_key.get_secret_value() if w.robot_webhook_key else None
        if w.secret is not None or webhook:
            client = wecom_client = WeComClient(
                store, http, api_base=w.api_base, corp_id=w.corp_id,
                secret=w.secret.get_secret_value() if w.secret else "", agent_id=w.agent_id,
                webhook_key=webhook)
            if w.secret is not None:
                senders[WECOM_USER] = lambda to, text: client.send_text(to_user=to, text=text)
                senders[WECOM_APPCHAT] = lambda chat, text: client.send_group_text(
                    chat_id=chat, text=text)
            if webhook:
                # A group robot posts into the one group it was added to.
                senders[WECOM_WEBHOOK] = lambda _chat, text: client.send_webhook_text(text=text)
                group_channel = WECOM_WEBHOOK
    wechat: OfficialAccountCallback | None = None
    wechat_client: OfficialAccountClient | None = None
    if settings.wechat is not None:
        c = settings.wechat
        wechat = OfficialAccountCallback(
            token=c.token.get_secret_value(), app_id=c.app_id,
            aes_key=c.aes_key.get_secret_value() if c.aes_key else None, mode=c.mode,
            max_elements=settings.max_callback_elements)
        if c.app_secret is not None:
            oa = wechat_client = OfficialAccountClient(
                store, http, api_base=c.api_base, app_id=c.app_id,
                app_secret=c.app_secret.get_secret_value())
            senders[WECHAT_CUSTOM] = lambda to, text: oa.send_text(to_user=to, text=text)
    aibot_cb = _wire_aibot(settings, store, http, senders=senders, renderers=renderers)
    a = settings.wecom_aibot
    mode = a.reply_mode if a is not None else "response_url"
    handler = InboxHandler(store=store, queue=queue, pipeline=pipeline, replier=replier,
                           group_channel=group_channel, dedup_ttl_s=ttl, aibot_reply_mode=mode,
                           aibot_names=tuple(a.bot_names) if a is not None else ("名片助手",))
    return BotKit(inbox=Inbox(store, queue=queue, dedup_ttl_s=ttl), replier=replier,
                  handler=handler, http=http, wecom=wecom, wechat=wechat,
                  wecom_client=wecom_client, wechat_client=wechat_client, aibot=aibot_cb,
                  aibot_reply_mode=mode)


def _wire_aibot(settings: Settings, store: Store, http: httpx.Client, *,
                senders: dict[str, Sender], renderers: dict[str, Renderer]
                ) -> AibotCallback | None:
    """Add the AI bot's reply senders and their markdown renderer; return its HTTP callback,
    None when the AI bot or its Token/EncodingAESKey are not configured."""
    a = settings.wecom_aibot
    if a is None:
        return None

    def to_stream(sid: str, text: str) -> None:
        # Read by the next stream refresh WeCom sends (app/api/aibot.py).
        store.put(aibot.STREAM_NS, sid, aibot.stream_body(sid, content=text, finish=True)["stream"],
                  ttl_s=aibot.STREAM_TTL_S)

    def to_ws(req_id: str, text: str) -> None:
        # Sent by `mingpian aibot connect` as aibot_respond_msg, echoing the req_id.
        body = aibot.stream_body(aibot.stream_id(req_id), content=text, finish=True)
        store.enqueue(aibot.WS_REPLY_QUEUE, {"req_id": req_id, "body": body})

    senders.update({
        AIBOT_RESPONSE_URL: lambda url, text: aibot.post_response_url(http, url, text),
        AIBOT_STREAM: to_stream, AIBOT_WS: to_ws})
    renderers.update(dict.fromkeys((AIBOT_RESPONSE_URL, AIBOT_STREAM, AIBOT_WS),
                                   aibot.render_markdown))
    if a.token is None or a.aes_key is None:
        return None  # long connection only
    return AibotCallback(token=a.token.get_secret_value(), aes_key=a.aes_key.get_secret_value(),
                         max_values=settings.max_callback_elements)
