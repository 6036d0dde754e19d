"""What mingpian learns about a customer, flowing back to where people work (issue 15):
WeChat sign-in on card pages, tags back into WeCom, the salesperson's sidebar, and the
contact-me QR code of cards. Built once per process from settings (only app/ reads them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from app.settings import Settings
from bot.consent import ConsentBook
from bot.contacts_api import ContactsApi
from bot.platform import TokenCache, WeComClient
from bot.tags import TagSync, TagSyncConfig
from cards.contact_way import MakeContactWay
from cards.oauth import OAuthApp, WeChatSignIn
from cards.service import CardsService
from cards.sidebar import Sidebar
from nlp.identity import IdentityRepo
from nlp.profile import ProfileRepo, erased_at
from store import Store


@dataclass(frozen=True)
class WeComJs:
    """What the sidebar's JS-SDK page needs: the corp and agent, the script, and the agent's
    jsapi ticket (shared by every process like an access token)."""

    corp_id: str
    agent_id: str
    jssdk_url: str
    oauth_base: str
    tickets: TokenCache


@dataclass(frozen=True)
class CustomerKit:
    """Issue 15's customer-facing parts of one process.

    ``signin`` is None unless the Official Account's app id and secret are set (and
    ``card_signin`` is on); ``contacts`` and ``wecom_js`` are None without a WeCom app
    secret; ``tags`` then raises NotConfiguredError when asked to sync."""

    signin: WeChatSignIn | None
    consent: ConsentBook
    tags: TagSync
    sidebar: Sidebar
    contacts: ContactsApi | None
    wecom_js: WeComJs | None


def contacts_api(bot_client: WeComClient | None, settings: Settings) -> ContactsApi | None:
    """Return the customer-contact API of the WeCom app, when it has a secret."""
    if bot_client is None or settings.wecom is None or settings.wecom.secret is None:
        return None
    return ContactsApi(bot_client)


def contact_way_maker(api: ContactsApi | None) -> MakeContactWay | None:
    """Return what makes a card's 联系我 QR code through WeCom (None without WeCom)."""
    if api is None:
        return None

    def make(card_id: str, userid: str) -> tuple[str, str]:
        way = api.add_contact_way(userid=userid, state=f"card:{card_id}")
        return way.config_id, way.qr_code

    return make


def build_customers(settings: Settings, store: Store, *, http: httpx.Client,
                    api: ContactsApi | None, cards: CardsService, profiles: ProfileRepo,
                    identities: IdentityRepo, clock: Callable[[], float] = time.time
                    ) -> CustomerKit:
    """Return the process's sign-in, tag write-back, sidebar and WeCom JS-SDK parts."""
    secret = settings.share_secret.get_secret_value().encode()
    signin = None
    oa = settings.wechat
    if oa is not None and oa.card_signin and oa.app_id and oa.app_secret is not None:
        signin = WeChatSignIn(store, http, secret=secret, clock=clock, app=OAuthApp(
            app_id=oa.app_id, app_secret=oa.app_secret.get_secret_value(),
            api_base=oa.api_base, oauth_base=oa.oauth_base,
            public_base_url=settings.public_base_url))
    consent = ConsentBook(store)
    t = settings.tags

    def interests(external_userid: str) -> list[str]:
        profile = profiles.get("user", identities.canonical(external_userid))
        return [w.tag for w in profile.tags if w.weight >= t.min_weight] if profile else []

    def erased(external_userid: str) -> bool:
        return any(erased_at(store, u) is not None
                   for u in {external_userid, identities.canonical(external_userid)})

    tags = TagSync(store, api, consent=consent, interests=interests, erased=erased,
                   config=TagSyncConfig(group_name=t.group_name, top_n=t.top_n,
                                        min_interval_s=t.min_interval_s,
                                        calls_per_minute=t.calls_per_minute, batch=t.batch))
    sidebar = Sidebar(cards, profile=lambda person: profiles.get("user", person),
                      canonical=identities.canonical, secret=secret,
                      old_secrets=cards.config.old_share_secrets)
    wecom_js = None
    if api is not None and settings.wecom is not None:
        w = settings.wecom
        tickets = TokenCache(store, name=f"wecom-jsapi:{w.corp_id}:{w.agent_id}",
                             fetch=api.agent_ticket)
        wecom_js = WeComJs(corp_id=w.corp_id, agent_id=w.agent_id, jssdk_url=w.jssdk_url,
                           oauth_base=w.oauth_base, tickets=tickets)
    return CustomerKit(signin=signin, consent=consent, tags=tags, sidebar=sidebar,
                       contacts=api, wecom_js=wecom_js)
