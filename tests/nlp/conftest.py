"""Fixtures of the nlp tests: one real USE model and one warmed tagger per session."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from nlp.embed import CachedEmbedder, Embedder, Vectors, load_embedder
from nlp.tagging import Tagger
from nlp.taxonomy import Taxonomy


class CountingEmbedder:
    """Wraps an embedder and records every call (to prove what is and is not embedded)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(list(texts))
        return self.inner.encode(texts)


@pytest.fixture(scope="session")
def use_embedder() -> CachedEmbedder:
    """The real default embedder (USE multilingual, ~1 s to load)."""
    emb = load_embedder("use")
    assert emb.encode(["热身"]).shape == (1, 512)
    return emb


@pytest.fixture(scope="session")
def tagger(use_embedder: CachedEmbedder) -> Tagger:
    """A tagger over the shipped taxonomy with the shipped calibration, index built."""
    t = Tagger(taxonomy=Taxonomy.load(), embedder=use_embedder)
    t.warm()
    return t


@pytest.fixture
def counting_tagger(use_embedder: CachedEmbedder) -> tuple[Tagger, CountingEmbedder]:
    """A fresh tagger whose embedder calls are recorded after its index is built."""
    emb = CountingEmbedder(use_embedder)
    t = Tagger(taxonomy=Taxonomy.load(), embedder=emb)
    t.warm()
    emb.calls.clear()
    return t, emb


def unit(seed: int, dim: int = 512) -> np.ndarray:
    """Return a deterministic random unit vector."""
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)
