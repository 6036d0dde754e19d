"""The bot's objects for one process, built from settings (only app/ reads settings)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from app.settings import Settings
from bot.callback import OfficialAccountCallback, WeComCallback
from bot.handlers import InboxHandler
from bot.inbox import Inbox
from bot.platform import OfficialAccountClient, WeComClient
from bot.replies import Replier, ReplyPolicy, Sender
from bot.routing import WECHAT_CUSTOM, WECOM_APPCHAT, WECOM_USER, WECOM_WEBHOOK
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

    def close(self) -> None:
        """Finish the inbox's write in flight; release the HTTP connection pool."""
        self.inbox.close()
        self.http.close()


def reply_policy(settings: Settings) -> ReplyPolicy:
    """Return the reply policy's plain values."""
    r = settings.reply
    names = tuple(settings.wecom.bot_names) if settings.wecom is not None else ("名片助手",)
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
    replier = Replier(store=store, policy=reply_policy(settings), recommender=recommender,
                      senders=senders)
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
    handler = InboxHandler(store=store, queue=queue, pipeline=pipeline, replier=replier,
                           group_channel=group_channel, dedup_ttl_s=ttl)
    return BotKit(inbox=Inbox(store, queue=queue, dedup_ttl_s=ttl), replier=replier,
                  handler=handler, http=http, wecom=wecom, wechat=wechat,
                  wecom_client=wecom_client, wechat_client=wechat_client)
