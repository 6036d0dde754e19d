"""Embedding vectors as the text stored in JSON documents: base64 of little-endian floats.

Catalog vectors are stored as float32 (``catalog.vec``: the index searches them as they
are); a profile's interest direction as float16 (``profile.user``/``profile.group``: one
per user, so half the size matters more than the last digits). The precision is part of
the stored format: a reader names the one its writer used.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Precision = Literal["float32", "float16"]
_DTYPE: dict[Precision, str] = {"float32": "<f4", "float16": "<f2"}


def encode_vector(v: npt.ArrayLike, *, precision: Precision) -> str:
    """Return a vector as base64 of its little-endian floats at this precision."""
    return base64.b64encode(np.asarray(v, dtype=_DTYPE[precision]).tobytes()).decode("ascii")


def decode_stored(s: str, *, precision: Precision) -> npt.NDArray[Any]:
    """Return the vector of text that encode_vector wrote, at its stored precision (a
    read-only view of the decoded bytes: no copy)."""
    return np.frombuffer(base64.b64decode(s), dtype=_DTYPE[precision])


def decode_vector(s: str, *, precision: Precision) -> npt.NDArray[np.float32]:
    """Return the float32 vector of text that encode_vector wrote at this precision."""
    return decode_stored(s, precision=precision).astype(np.float32)
