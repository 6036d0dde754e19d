"""The heavy objects of one process, built once from settings and shared by HTTP and workers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.bot_wiring import BotKit, build_bot
from app.cards_wiring import build_cards
from app.catalog_wiring import build_catalog
from app.logging_filter import install_log_redaction
from app.nlp_wiring import build_nlp, build_profiles
from app.settings import Settings
from store import QueueItem, Store, open_store

if TYPE_CHECKING:
    from cards.service import CardsService
    from catalog_sync.repo import CatalogRepo
    from nlp.embed import Embedder
    from nlp.index import VectorIndex
    from nlp.pipeline import MessagePipeline
    from nlp.profile import ProfileRepo
    from nlp.recommend import Recommender
    from nlp.tagging import Tagger

log = logging.getLogger("mingpian.services")

INBOX = "inbox"


@dataclass
class Services:
    """Everything a request handler or a worker needs; built by build_services()."""

    settings: Settings
    store: Store
    inbox_handler: Callable[[Sequence[QueueItem]], None]
    bot: BotKit | None = None  # callbacks, inbox, reply senders (app/bot_wiring.py)
    cards: CardsService | None = None  # cards, shares, plan ledger (app/cards_wiring.py)
    embedder: Embedder | None = None  # the sentence embedder (app/catalog_wiring.py)
    catalog: CatalogRepo | None = None  # catalog items in the store
    index: VectorIndex | None = None  # faiss over item vectors, following the catalog
    recommender: Recommender | None = None  # nlp.recommend over index, catalog, signals
    tagger: Tagger | None = None  # nlp.tagging over the taxonomy (app/nlp_wiring.py)
    profiles: ProfileRepo | None = None  # decaying user and group profiles
    pipeline: MessagePipeline | None = None  # redact → tag → profiles, once per message

    def close(self) -> None:
        """Release every resource."""
        if self.bot is not None:
            self.bot.close()
        if self.index is not None:
            self.index.close()
        self.store.close()


def build_services(settings: Settings, *, store: Store | None = None,
                   embedder: Embedder | None = None) -> Services:
    """Open the store (and, as issues land, the models and indexes) for this process.

    ``embedder`` replaces the one the settings name (tests pass one shared model)."""
    install_log_redaction()  # before anything can log a message's text
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # SQLite: checkpoint the WAL on a thread of its own, not inside whichever request's
    # transaction happens to fill it (an 8–16 ms stall each time, measured).
    st = store or open_store(redis_url=settings.redis_url, data_dir=settings.data_dir,
                             background_checkpoint=True)
    svc = Services(settings=settings, store=st, inbox_handler=_no_handler)
    svc.profiles = build_profiles(settings, st)
    kit = build_catalog(settings, st, embedder=embedder, profiles=svc.profiles)
    svc.embedder, svc.catalog, svc.index = kit.embedder, kit.repo, kit.index
    svc.recommender = kit.recommender
    nlp = build_nlp(settings, st, embedder=kit.embedder, profiles=svc.profiles)
    svc.tagger, svc.pipeline = nlp.tagger, nlp.pipeline
    svc.bot = build_bot(settings, st, queue=INBOX, pipeline=svc.pipeline,
                        recommender=svc.recommender)
    if svc.bot.handler is not None:
        svc.inbox_handler = svc.bot.handler
    svc.cards = build_cards(svc)
    return svc


def _no_handler(items: Sequence[QueueItem]) -> None:
    raise RuntimeError("no inbox handler is wired: items stay queued")
