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
from app.logging_filter import install_log_redaction
from app.nlp_wiring import build_nlp, build_profiles, load_taxonomy
from app.settings import Settings
from cards.service import CardsService
from catalog.repo import CatalogRepo
from nlp.embed import Embedder
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

    def close(self) -> None:
        """Release every resource."""
        self.bot.close()
        self.index.close()
        self.store.close()


def build_services(settings: Settings, *, store: Store | None = None,
                   embedder: Embedder | None = None,
                   clock: Callable[[], float] = time.time) -> Services:
    """Open the store and build every domain of this process over it.

    ``embedder`` replaces the one the settings name (tests pass one shared model);
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
    nlp = build_nlp(settings, st, embedder=catalog.embedder, taxonomy=taxonomy,
                    profiles=profiles)
    bot = build_bot(settings, st, queue=INBOX, pipeline=nlp.pipeline,
                    recommender=catalog.recommender)
    cards = build_cards(settings, st, catalog=catalog.repo, recommender=catalog.recommender,
                        clock=clock)
    return Services(settings=settings, store=st, profiles=profiles, embedder=catalog.embedder,
                    catalog=catalog.repo, index=catalog.index,
                    catalog_service=catalog.service, recommender=catalog.recommender,
                    tagger=nlp.tagger, pipeline=nlp.pipeline, bot=bot, cards=cards,
                    inbox_handler=bot.handler)
