"""Validating and importing catalog items from JSON values and JSONL files (demo included)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from catalog.repo import CatalogRepo, UpsertStats
from models.catalog import CatalogItem

BATCH = 256


@dataclass(frozen=True)
class ItemError:
    """Why one input item was rejected; index is its position (or line number in a file)."""

    index: int
    id: str | None
    errors: list[dict[str, Any]]

    @property
    def message(self) -> str:
        """Return the first problem as one line: "price_cents: Input should be …"."""
        first = self.errors[0] if self.errors else {"loc": [], "msg": "invalid"}
        loc = ".".join(str(p) for p in first.get("loc", ())) or "item"
        return f"{loc}: {first.get('msg', 'invalid')}"

    def to_json(self) -> dict[str, Any]:
        """Return the error as reported by the API and the CLI."""
        return {"index": self.index, "id": self.id, "error": self.message,
                "details": self.errors}


@dataclass
class ImportReport:
    """What an import did: upsert figures plus every rejected item."""

    stats: UpsertStats = field(default_factory=UpsertStats)
    errors: list[ItemError] = field(default_factory=list)
    received: int = 0

    def to_json(self) -> dict[str, Any]:
        """Return the report as the API answers it."""
        s = self.stats
        return {"received": self.received, "accepted": self.received - len(self.errors),
                "created": s.created, "updated": s.updated, "unchanged": s.unchanged,
                "stale": s.stale, "embedded": s.embedded,
                "rejected": len(self.errors), "errors": [e.to_json() for e in self.errors]}


def validate_item(index: int, raw: object) -> CatalogItem | ItemError:
    """Return the validated item, or the reasons it is invalid."""
    item_id = raw.get("id") if isinstance(raw, dict) else None
    shown_id = item_id if isinstance(item_id, str) else None
    if not isinstance(raw, dict):
        return ItemError(index, None, [{"loc": [], "msg": "an item must be a JSON object"}])
    try:
        return CatalogItem.model_validate(raw)
    except ValidationError as e:
        return ItemError(index, shown_id, [{"loc": list(err.get("loc", ())),
                                            "msg": err.get("msg", "")} for err in e.errors()])


def split_valid(rows: Iterable[tuple[int, object]]
                ) -> tuple[list[CatalogItem], list[ItemError]]:
    """Return the valid items and the errors of the invalid ones."""
    good: list[CatalogItem] = []
    bad: list[ItemError] = []
    for index, raw in rows:
        got = validate_item(index, raw)
        if isinstance(got, ItemError):
            bad.append(got)
        else:
            good.append(got)
    return good, bad


def read_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    """Yield (line number, parsed JSON or an _Unparsable marker) for each non-blank line."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                yield n, _Unparsable(str(e))


@dataclass(frozen=True)
class _Unparsable:
    error: str


def demo_catalog_path() -> Path:
    """Return the bundled demo catalog (about 150 items, three providers)."""
    return Path(str(resources.files("catalog_sync") / "data" / "demo_catalog.jsonl"))


def import_rows(repo: CatalogRepo, rows: Iterable[tuple[int, object]], *,
                on_progress: Any = None) -> ImportReport:
    """Validate and upsert rows in batches; invalid rows are reported, never fatal."""
    report = ImportReport()
    pending: list[tuple[int, object]] = []

    def flush() -> None:
        good, bad = split_valid(pending)
        report.errors += bad
        report.stats.add(repo.upsert(good))
        if on_progress is not None:
            on_progress(len(pending))
        pending.clear()

    for index, raw in rows:
        report.received += 1
        if isinstance(raw, _Unparsable):
            report.errors.append(ItemError(index, None, [{"loc": [], "msg": raw.error}]))
            continue
        pending.append((index, raw))
        if len(pending) >= BATCH:
            flush()
    if pending:
        flush()
    return report


def import_items(repo: CatalogRepo, raws: Sequence[object]) -> ImportReport:
    """Validate and upsert a list of JSON values (index = position in the list)."""
    return import_rows(repo, enumerate(raws))
