"""Tagging, profiles and the message pipeline for one process (only app/ reads settings)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.settings import Settings
from nlp.embed import Embedder
from nlp.pipeline import MessagePipeline
from nlp.profile import ProfileRepo
from nlp.tagging import Tagger
from nlp.taxonomy import Taxonomy
from store import Store

log = logging.getLogger("mingpian.nlp")


@dataclass
class NlpKit:
    """The tagger, the profile repository and the pipeline over both."""

    tagger: Tagger
    profiles: ProfileRepo
    pipeline: MessagePipeline


def build_profiles(settings: Settings, store: Store) -> ProfileRepo:
    """Return the profile repository with the configured half-life."""
    return ProfileRepo(store, half_life_days=settings.profile_half_life_days)


def load_taxonomy(settings: Settings) -> Taxonomy:
    """Return the process's taxonomy: the shipped one, or taxonomy_path, plus
    extra_taxonomy_path and the example sentences. Built once and handed to both the tagger
    (build_nlp) and the recommender (app/catalog_wiring.build_catalog)."""
    return Taxonomy.load(settings.taxonomy_path, extra=settings.extra_taxonomy_path,
                         examples=settings.taxonomy_examples_path)


def build_nlp(settings: Settings, store: Store, *, embedder: Embedder, taxonomy: Taxonomy,
              profiles: ProfileRepo | None = None) -> NlpKit:
    """Build the tagger over ``taxonomy`` and the pipeline (the tag index is built lazily,
    on the first message, from the embedder)."""
    tagger = Tagger(taxonomy=taxonomy, embedder=embedder)
    repo = profiles or build_profiles(settings, store)
    pipeline = MessagePipeline(store=store, tagger=tagger, profiles=repo,
                               retain_messages=settings.retain_messages)
    log.info("taxonomy: %d tags; retain_messages=%s; profile half-life %.1f days",
             len(taxonomy), settings.retain_messages, settings.profile_half_life_days)
    return NlpKit(tagger=tagger, profiles=repo, pipeline=pipeline)
