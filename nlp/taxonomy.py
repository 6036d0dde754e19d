"""The interest taxonomy: tags with an industry, keywords and a one-sentence description.

The shipped default is ``nlp/dicts/taxonomy.json``; a deployment replaces it (a path) or
extends it (a second file whose tags are added, or merged into same-named ones), and the
catalog adds its item tags at run time with :meth:`Taxonomy.extend_from_catalog`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from nlp.tokenize import normalize

CATALOG_INDUSTRY = "catalog"
_MIN_TERM = 2  # characters: a one-character category segment is no tag
# A catalog tag worth turning into an interest: a short phrase with at least two letters
# or CJK characters ("6月+" or "A" are not interests).
_TAGLIKE = re.compile(r"^(?=(?:.*[^\W\d_]){2})[\w+#&·.\- ]{2,16}$")


@dataclass(frozen=True)
class TagDef:
    """One interest tag."""

    tag: str
    industry: str
    keywords: tuple[str, ...]
    description: str
    examples: tuple[str, ...] = ()  # chat sentences that mean this tag without saying it

    def terms(self) -> tuple[str, ...]:
        """Return the tag name and its keywords (what a message may literally contain)."""
        return (self.tag, *self.keywords)


def default_taxonomy_path() -> Path:
    """Return the path of the shipped taxonomy file."""
    return Path(str(resources.files("nlp") / "dicts" / "taxonomy.json"))


def default_examples_path() -> Path:
    """Return the path of the shipped example sentences (per tag, and off-topic chatter)."""
    return Path(str(resources.files("nlp") / "dicts" / "examples.json"))


def _strings(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{what} must be a list of strings")
    return tuple(dict.fromkeys(s for k in value if (s := k.strip())))


def _parse(doc: Any, *, source: str) -> list[TagDef]:
    if not isinstance(doc, dict) or not isinstance(doc.get("tags"), list):
        raise ValueError(f"{source}: expected an object with a 'tags' list")
    out: list[TagDef] = []
    for i, t in enumerate(doc["tags"]):
        if not isinstance(t, dict) or not isinstance(t.get("tag"), str) or not t["tag"].strip():
            raise ValueError(f"{source}: tag #{i} has no name")
        what = f"{source}: tag {t['tag']!r}"
        out.append(TagDef(
            tag=t["tag"].strip(),
            industry=str(t.get("industry") or "general"),
            keywords=_strings(t.get("keywords", []), f"{what}: keywords"),
            description=str(t.get("description") or t["tag"]).strip(),
            examples=_strings(t.get("examples", []), f"{what}: examples"),
        ))
    return out


def _merge(a: TagDef, b: TagDef) -> TagDef:
    # A catalog tag never overrides what a taxonomy file says about the same tag.
    weak = b.industry == CATALOG_INDUSTRY
    return TagDef(tag=a.tag, industry=a.industry if weak else b.industry,
                  keywords=tuple(dict.fromkeys((*a.keywords, *b.keywords))),
                  description=a.description if weak else b.description,
                  examples=tuple(dict.fromkeys((*a.examples, *b.examples))))


class Taxonomy:
    """An ordered, thread-safe set of tags; ``version`` grows with every change so that
    users (the tagger, the tokeniser) know when to rebuild what they derived from it."""

    def __init__(self, tags: Iterable[TagDef] = (), *, offtopic: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._tags: dict[str, TagDef] = {}
        self._extra_terms: set[str] = set()
        # Chatter that is about none of the tags ("今晚的月亮好圆"): the tagger's "none" class.
        self.offtopic: tuple[str, ...] = tuple(offtopic)
        self.version = 0
        self.extend(tags)

    # -- loading -------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | None = None, *, extra: Path | None = None,
             examples: Path | None = None) -> Taxonomy:
        """Load a taxonomy file (the shipped default when path is None), then an extension.

        Example sentences come from the tags themselves ("examples") and from an examples
        file (the shipped one when None), matched by tag name.
        """
        tax = cls()
        tax.extend(cls.read(path or default_taxonomy_path()))
        if extra is not None:
            tax.extend(cls.read(extra))
        tax.add_examples(examples or default_examples_path())
        return tax

    @staticmethod
    def read(path: Path) -> list[TagDef]:
        """Return the tags of one taxonomy file."""
        return _parse(json.loads(path.read_text(encoding="utf-8")), source=str(path))

    def add_examples(self, path: Path) -> None:
        """Merge an examples file: {"examples": {tag: [sentence…]}, "offtopic": [sentence…]}."""
        doc = json.loads(path.read_text(encoding="utf-8"))
        by_tag = doc.get("examples", {}) if isinstance(doc, dict) else None
        if not isinstance(by_tag, dict):
            raise ValueError(f"{path}: expected an object with an 'examples' object")
        updates = []
        for name, sentences in by_tag.items():
            old = self.get(name)
            if old is not None:
                ex = _strings(sentences, f"{path}: examples of {name!r}")
                updates.append(TagDef(tag=name, industry=old.industry, keywords=(),
                                      description=old.description, examples=ex))
        self.extend(updates)
        off = _strings(doc.get("offtopic", []), f"{path}: offtopic")
        with self._lock:
            merged = tuple(dict.fromkeys((*self.offtopic, *off)))
            if merged != self.offtopic:
                self.offtopic = merged
                self.version += 1

    # -- reading -------------------------------------------------------------
    @property
    def tags(self) -> list[TagDef]:
        """Return every tag, in file order."""
        with self._lock:
            return list(self._tags.values())

    def names(self) -> list[str]:
        """Return every tag name, in file order."""
        with self._lock:
            return list(self._tags)

    def get(self, tag: str) -> TagDef | None:
        """Return one tag or None."""
        with self._lock:
            return self._tags.get(tag)

    def __len__(self) -> int:
        with self._lock:
            return len(self._tags)

    def __contains__(self, tag: object) -> bool:
        with self._lock:
            return tag in self._tags

    def prototypes(self) -> dict[str, list[str]]:
        """Return tag → texts that say it: "tag：description", then its example sentences
        (the recommender's tag vectors are their centroids)."""
        with self._lock:
            return {t.tag: [f"{t.tag}：{t.description}", *t.examples]
                    for t in self._tags.values()}

    def terms(self) -> set[str]:
        """Return every word the tokeniser must keep whole: names, keywords, catalog terms."""
        with self._lock:
            out = set(self._extra_terms)
            for t in self._tags.values():
                out.update(t.terms())
            return out

    # -- changing ------------------------------------------------------------
    def extend(self, tags: Iterable[TagDef]) -> list[str]:
        """Add tags (a same-named tag gains the new keywords); return the names added."""
        added: list[str] = []
        with self._lock:
            changed = False
            for t in tags:
                old = self._tags.get(t.tag)
                if old is None:
                    self._tags[t.tag] = t
                    added.append(t.tag)
                    changed = True
                else:
                    merged = _merge(old, t)
                    if merged != old:
                        self._tags[t.tag] = merged
                        changed = True
            if changed:
                self.version += 1
        return added

    def extend_from_catalog(self, *, tags: Iterable[str] = (),
                            categories: Iterable[str] = ()) -> list[str]:
        """Turn catalog item tags into interest tags and teach the tokeniser category words.

        ``tags`` are item tags ("辅食添加", "补铁"): one unknown to the taxonomy becomes a
        tag of industry "catalog" whose only keyword is its name. ``categories`` are paths
        ("母婴/辅食"): their segments become tokeniser terms, not tags. Return the new tags.
        """
        known = {normalize(n) for n in self.names()}
        new: list[TagDef] = []
        for raw in tags:
            name = raw.strip()
            if not _TAGLIKE.match(name) or normalize(name) in known:
                continue
            known.add(normalize(name))
            new.append(TagDef(tag=name, industry=CATALOG_INDUSTRY, keywords=(),
                              description=name))
        terms = {seg.strip() for c in categories for seg in re.split(r"[/>|]", c)}
        with self._lock:
            fresh = {t for t in terms if len(t) >= _MIN_TERM} - self._extra_terms
            if fresh:
                self._extra_terms |= fresh
                self.version += 1
        return self.extend(new) if new else []

    def industries(self) -> Sequence[str]:
        """Return the industries present, in first-seen order."""
        return list(dict.fromkeys(t.industry for t in self.tags))
