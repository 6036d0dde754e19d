"""How sure mingpian is that an item answers: one logistic model over retrieval features.

Free text (``POST /v1/recommendations/query``, the bot, similar items): each candidate gets
tag-agnostic features — dense cosine with the whole text and with its best clause, BM25
(saturated) and the share of the text's words the item contains, the evidence of an
interest tag the text speaks about and the item carries, the gap to the best dense
candidate, and ``fused``: the score that ranks the candidates (the recommender's weighted
sum of dense, lexical and tag evidence). The model turns chosen features (the shipped one:
``fused`` alone, so confidence never disagrees with the order) into the probability that
the item is relevant: the item's ``confidence``. The answer is ``confident`` when its best
item reaches the model's threshold.

Profiles (``GET /v1/recommendations``): the profile score maps onto a probability by a
one-feature logistic fitted on member sessions.

Coefficients are fitted per embedder on the old labelled set only (bench/bench_relevance.py
fit) and shipped in nlp/dicts/relevance_model.json.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger("mingpian.relevance")

F64 = npt.NDArray[np.float64]

TEXT_FEATURES: tuple[str, ...] = ("dense", "dense_clause", "bm25", "coverage", "tag",
                                  "dense_gap", "fused")


@dataclass(frozen=True)
class RelevanceModel:
    """Coefficients of the text model and the profile mapping, for one embedder."""

    embedder: str
    features: tuple[str, ...]
    coef: tuple[float, ...]
    intercept: float
    confident: float  # the best item's confidence an answer needs to be confident
    profile_coef: float = 4.0
    profile_intercept: float = -2.0
    profile_confident: float = 0.5
    fitted_on: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def columns(self) -> list[int]:
        """Return the positions of the model's features in TEXT_FEATURES."""
        return [TEXT_FEATURES.index(f) for f in self.features]

    def text_probability(self, feats: F64) -> F64:
        """Return P(relevant) for rows of TEXT_FEATURES values."""
        z = feats[:, self.columns()] @ np.asarray(self.coef) + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)

    def profile_probability(self, score: F64) -> F64:
        """Return P(relevant) for profile scores."""
        z = self.profile_coef * np.asarray(score, dtype=np.float64) + self.profile_intercept
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        """Return the model as a JSON object."""
        d = asdict(self)
        d["features"] = list(self.features)
        d["coef"] = [round(c, 6) for c in self.coef]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RelevanceModel:
        """Build a model from its JSON object."""
        feats = tuple(str(f) for f in d["features"])
        unknown = set(feats) - set(TEXT_FEATURES)
        if unknown:
            raise ValueError(f"relevance model uses unknown features {sorted(unknown)}")
        return cls(embedder=str(d["embedder"]), features=feats,
                   coef=tuple(float(c) for c in d["coef"]), intercept=float(d["intercept"]),
                   confident=float(d["confident"]),
                   profile_coef=float(d.get("profile_coef", 4.0)),
                   profile_intercept=float(d.get("profile_intercept", -2.0)),
                   profile_confident=float(d.get("profile_confident", 0.5)),
                   fitted_on=str(d.get("fitted_on", "")), extra=dict(d.get("extra", {})))


def default_model_path() -> Path:
    """Return the path of the shipped relevance models."""
    return Path(str(resources.files("nlp") / "dicts" / "relevance_model.json"))


def load_model(embedder_name: str, path: Path | None = None) -> RelevanceModel | None:
    """Return the model fitted for this embedder, else the file's default (None: no file,
    or the hashing embedder)."""
    p = path or default_model_path()
    if not p.exists() or embedder_name.startswith("hash"):
        return None  # the hashing stand-in has no meaning to calibrate: every answer counts
    doc = json.loads(p.read_text(encoding="utf-8"))
    models: dict[str, Any] = doc["models"]
    if embedder_name in models:
        return RelevanceModel.from_json(models[embedder_name])
    log.warning("no relevance model for embedder %r; using the one fitted for %r "
                "(refit: python -m bench.bench_relevance --fit --embedder SPEC)",
                embedder_name, doc["default"])
    return RelevanceModel.from_json(models[doc["default"]])


def save_model(model: RelevanceModel, path: Path | None = None, *, default: bool = False
               ) -> None:
    """Add (or replace) one embedder's model in the models file."""
    p = path or default_model_path()
    doc: dict[str, Any] = (json.loads(p.read_text(encoding="utf-8")) if p.exists()
                           else {"default": model.embedder, "models": {}})
    doc["models"][model.embedder] = model.to_json()
    if default:
        doc["default"] = model.embedder
    p.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
