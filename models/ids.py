"""Opaque identifiers: ≤ 64 chars of [A-Za-z0-9_.:-] (CONTRACTS preamble)."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
