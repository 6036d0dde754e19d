"""The heavy objects of one process, built once from settings and shared by HTTP and workers.

This is the composition root: `build_services` builds every domain in dependency order, in
one place, and hands back a frozen `Services` — no field is optional, none is filled in later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.bot_wiring import BotKit, build_bot
from app.cards_wiring import build_cards
from app.catalog_wiring import CatalogService, build_catalog
from app.console.activity import CountingPipeline
from app.console.kit import ConsoleKit, build_console
from app.customer_wiring import CustomerKit, build_customers, contact_way_maker, contacts_api
from app.logging_filter import install_log_redaction
from app.nlp_wiring import build_nlp, build_profiles, load_taxonomy
from app.settings import Settings
from cards.service import CardsService
from catalog.repo import CatalogRepo
from nlp.embed import Embedder
from nlp.feedback import Feedback
from nlp.identity import IdentityRepo
from nlp.index import VectorIndex
from nlp.pipeline import MessagePipeline
from nlp.profile import ProfileRepo
from nlp.recommend import Recommender
from nlp.tagging import Tagger
from store import QueueItem, Store, open_store

INBOX = "inbox"


@dataclass(frozen=True)
class Services:
    """Everything a request handler or a worker needs; built by build_services()."""

    settings: Settings
    store: Store
    profiles: ProfileRepo  # decaying user and group profiles (app/nlp_wiring.py)
    embedder: Embedder  # the sentence embedder (app/catalog_wiring.py)
    catalog: CatalogRepo  # catalog items in the store
    index: VectorIndex  # faiss over item vectors, following the catalog
    catalog_service: CatalogService  # catalog writes that refresh the index
    recommender: Recommender  # nlp.recommend over index, catalog, signals
    tagger: Tagger  # nlp.tagging over the taxonomy (app/nlp_wiring.py)
    pipeline: MessagePipeline  # redact → tag → profiles, once per message
    bot: BotKit  # callbacks, inbox, reply senders (app/bot_wiring.py)
    cards: CardsService  # cards, shares, plan ledger (app/cards_wiring.py)
    # What a worker runs on each claimed inbox batch: the bot's handler (bot/handlers.py).
    inbox_handler: Callable[[Sequence[QueueItem]], None]
    console: ConsoleKit  # the operator's console: accounts, counters, overrides (app/console/)
    # One person across WeChat, WeCom and the mall: canonical(), resolve(), linked_ids().
    identities: IdentityRepo
    # Views, clicks and orders back into profiles and popularity, exactly once (issue 15).
    feedback: Feedback
    # Sign-in on card pages, tags back into WeCom, the sidebar (app/customer_wiring.py).
    customers: CustomerKit

    def close(self) -> None:
        """Release every resource."""
        self.console.close()
        self.bot.close()
        self.index.close()
        self.store.close()


def build_services(settings: Settings, *, store: Store | None = None,
                   embedder: Embedder | None = None,
                   tagging_embedder: Embedder | None = None,
                   clock: Callable[[], float] = time.time) -> Services:
    """Open the store and build every domain of this process over it.

    ``embedder`` replaces the one the settings name (tests pass one shared model);
    ``tagging_embedder``, when given, is the one the message pipeline tags with (embedded
    `serve`: the same model in child processes, app/worker.py), the other one serving
    queries and the catalog;
    ``clock`` is the cards domain's time (tests move it by hand)."""
    install_log_redaction()  # before anything can log a message's text
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # SQLite: checkpoint the WAL on a thread of its own, not inside whichever request's
    # transaction happens to fill it (an 8–16 ms stall each time, measured).
    st = store or open_store(redis_url=settings.redis_url, data_dir=settings.data_dir,
                             background_checkpoint=True)
    profiles = build_profiles(settings, st)
    taxonomy = load_taxonomy(settings)  # one taxonomy: the tagger's and the recommender's
    catalog = build_catalog(settings, st, taxonomy=taxonomy, embedder=embedder,
                            profiles=profiles)
    nlp = build_nlp(settings, st, embedder=tagging_embedder or catalog.embedder,
                    taxonomy=taxonomy,
                    profiles=profiles)
    console = build_console(settings, st, taxonomy=taxonomy)
    # The console counts what the pipeline applies and hands it operators' taxonomy changes.
    pipeline = CountingPipeline(nlp.pipeline, recorder=console.recorder,
                                before_batch=console.taxonomy.refresh)
    bot = build_bot(settings, st, queue=INBOX, pipeline=pipeline,
                    recommender=catalog.recommender)
    contacts = contacts_api(bot.wecom_client, settings)  # WeCom 客户联系 (issue 15)
    feedback = Feedback(st, profiles=profiles, signals=catalog.recommender.signals,
                        items=catalog.repo, vectors=catalog.index.vectors,
                        known_tag=taxonomy.__contains__)
    cards = build_cards(settings, st, catalog=catalog.repo, recommender=catalog.recommender,
                        clock=clock, make_contact_way=contact_way_maker(contacts),
                        feedback=feedback)
    identities = IdentityRepo(st, profiles=profiles)  # one person across platforms (issue 15)
    customers = build_customers(settings, st, http=bot.http, api=contacts, cards=cards,
                                profiles=profiles, identities=identities, clock=clock)
    return Services(settings=settings, store=st, profiles=profiles, embedder=catalog.embedder,
                    catalog=catalog.repo, index=catalog.index,
                    catalog_service=catalog.service, recommender=catalog.recommender,
                    tagger=nlp.tagger, pipeline=pipeline, bot=bot, cards=cards,
                    inbox_handler=bot.handler, console=console,
                    identities=identities, customers=customers, feedback=feedback)
