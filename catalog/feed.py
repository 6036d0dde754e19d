"""What the catalog hands to the vector index, and what it needs from an embedder.

The index (nlp/index.py) follows a :class:`CatalogFeed`; the catalog repository implements
it. Both live here, below nlp, so that nlp and cards read the catalog without knowing how
catalog_sync fills it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from models.catalog import CatalogItem

Vectors = npt.NDArray[np.float32]


class TextEncoder(Protocol):
    """nlp.embed.Embedder as far as the catalog uses it: a name that keys the stored
    vectors, and the encoding of item texts."""

    name: str

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Return an (n, dim) float32 array, rows L2-normalised."""
        ...


@dataclass(frozen=True)
class IndexEntry:
    """An item and its embedding, as the index needs them."""

    item: CatalogItem
    vector: Vectors


class CatalogFeed(Protocol):
    """Where the index reads the catalog from (:class:`catalog.repo.CatalogRepo`)."""

    def version(self) -> int:
        """Return the number of changes ever logged (grows by one per item write)."""
        ...

    def epoch(self) -> str:
        """Return an id that changes when the catalog is recreated from scratch."""
        ...

    def changes_after(self, seq: int, *, limit: int = 1000) -> list[tuple[int, str]]:
        """Return (seq, item id) for logged changes after seq, in order."""
        ...

    def entries(self, ids: Sequence[str]) -> dict[str, IndexEntry]:
        """Return the current state of these items; absent ids are deleted or unembedded."""
        ...

    def iter_entries(self) -> Iterator[IndexEntry]:
        """Yield every item that has an embedding."""
        ...
