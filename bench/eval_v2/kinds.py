"""The shapes the hand-written eval v2 spec is written in."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Item:
    """One catalog item of a concept (price in yuan; kind product unless said)."""

    title: str
    description: str
    category: str
    tags: list[str]
    price: int
    kind: str = "product"


@dataclass(frozen=True)
class Concept:
    """One need: the items that answer it, how people ask for it, how they chat about it."""

    key: str
    domain: str
    items: list[Item]
    direct: list[str]
    hard: list[str]
    chat: list[str] = field(default_factory=list)
