"""Operators' changes that every process follows without a restart (issue 18).

Taxonomy: tags added or extended in the console are stored (``console.taxonomy``) under a
version counter (``console.meta`` "taxonomy"). Each process polls the version — the
pipeline before each batch, the console before it reads — and merges the stored tags into
its one Taxonomy (``Taxonomy.extend``: new tags, more keywords and example sentences), whose
own version then tells the tagger to rebuild its index, as a catalog change tells the
vector index.

Per-group bot settings are not kept here: the console's group form reads and writes the
bot's own (bot/group_settings.py, the store behind `/v1/groups/{id}/settings`), so the
console, the API and the replier share one source of truth.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel, Field

from models.errors import BadRequestError
from nlp.taxonomy import TagDef, Taxonomy
from store.base import Store

NS_TAXONOMY = "console.taxonomy"
NS_META = "console.meta"
_MAX_TERMS = 50
_MIN_TAG = 2


class TagEdit(BaseModel):
    """A tag as an operator adds or extends it."""

    tag: str = Field(min_length=2, max_length=16)
    industry: str = Field(default="custom", max_length=32)
    description: str = Field(default="", max_length=200)
    keywords: list[str] = Field(default_factory=list, max_length=_MAX_TERMS)
    examples: list[str] = Field(default_factory=list, max_length=_MAX_TERMS)

    def tagdef(self) -> TagDef:
        """Return the taxonomy entry."""
        return TagDef(tag=self.tag.strip(), industry=self.industry.strip() or "custom",
                      keywords=tuple(dict.fromkeys(k.strip() for k in self.keywords
                                                   if k.strip())),
                      description=self.description.strip() or self.tag.strip(),
                      examples=tuple(dict.fromkeys(e.strip() for e in self.examples
                                                   if e.strip())))


def split_terms(text: str) -> list[str]:
    """Return the terms of a form field: one per line, or separated by commas."""
    parts = text.replace("，", ",").replace("、", ",").replace("\n", ",").split(",")
    return [p.strip() for p in parts if p.strip()][:_MAX_TERMS]


class TaxonomyOverrides:
    """The stored operator tags, and this process's view of them."""

    def __init__(self, store: Store, taxonomy: Taxonomy, *, poll_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.taxonomy = taxonomy
        self.poll_s = poll_s
        self.clock = clock
        self.seen = -1
        self._checked = -1e18
        self._lock = threading.Lock()

    def version(self) -> int:
        """Return the stored version (0: no operator change yet)."""
        return int(self.store.counters(NS_META).get("taxonomy", 0))

    def refresh(self, *, force: bool = False) -> bool:
        """Merge stored operator tags if their version moved; return whether it did."""
        now = self.clock()
        if not force and now - self._checked < self.poll_s:
            return False
        with self._lock:
            self._checked = now
            v = self.version()
            if v == self.seen:
                return False
            self.taxonomy.extend(TagEdit.model_validate(r.doc).tagdef()
                                 for _, r in self.store.scan(NS_TAXONOMY))
            self.seen = v
            return True

    def stored(self) -> dict[str, TagEdit]:
        """Return every operator tag, by name."""
        return {k: TagEdit.model_validate(r.doc) for k, r in self.store.scan(NS_TAXONOMY)}

    def apply(self, edit: TagEdit) -> int:
        """Store a tag (merged with what an operator stored before), bump the version and
        take it here at once; return the new version."""
        d = edit.tagdef()
        if len(d.tag) < _MIN_TAG:
            raise BadRequestError("a tag name has at least 2 characters")
        old = self.store.get(NS_TAXONOMY, d.tag)
        prev = TagEdit.model_validate(old.doc) if old else None
        merged = TagEdit(tag=d.tag, industry=d.industry, description=d.description,
                         keywords=list(dict.fromkeys([*(prev.keywords if prev else []),
                                                      *d.keywords]))[:_MAX_TERMS],
                         examples=list(dict.fromkeys([*(prev.examples if prev else []),
                                                      *d.examples]))[:_MAX_TERMS])
        self.store.put(NS_TAXONOMY, d.tag, merged.model_dump())
        v = self.store.incr(NS_META, "taxonomy")
        self.refresh(force=True)
        return v


def preview(edit: TagEdit, texts: Sequence[str]) -> list[str]:
    """Return the texts among these that the tag's name or keywords would now match."""
    terms = [t for t in edit.tagdef().terms() if t]
    return [t for t in texts if any(term in t for term in terms)]
