"""Test helpers for the catalog: item factory, a counting embedder, a local mall server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from models.catalog import CatalogItem
from nlp.embed import HashEmbedder, Vectors


def item_json(item_id: str, **over: Any) -> dict[str, Any]:
    """Return a valid CONTRACTS §4 item, with overrides."""
    doc: dict[str, Any] = {
        "id": item_id, "kind": "product", "title": f"商品 {item_id}",
        "description": "温和不刺激，适合敏感肌。", "category": "美妆护肤/水乳",
        "tags": ["敏感肌"], "price_cents": 9900,
        "url": f"https://mall.example.com/p/{item_id}", "image_url": None,
        "availability": [], "active": True, "updated_at": "2026-11-01T08:00:00Z",
    }
    doc.update(over)
    return doc


def item(item_id: str, **over: Any) -> CatalogItem:
    """Return a validated item."""
    return CatalogItem.model_validate(item_json(item_id, **over))


class CountingEmbedder:
    """A hashing embedder that counts the texts it was asked to encode."""

    def __init__(self, dim: int = 64) -> None:
        self.inner = HashEmbedder(dim)
        self.dim = dim
        self.name = f"hash:{dim}"
        self.texts: list[str] = []

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.texts += list(texts)
        return self.inner.encode(texts)


@dataclass
class Mall:
    """The mall's catalog listing: ``?page=N&page_size=M&updated_since=T`` (1-based pages)."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[int, int, str | None]] = field(default_factory=list)
    fail_pages: dict[int, int] = field(default_factory=dict)  # page → failures left (-1: ∞)
    send_total: bool = True
    url: str = ""

    def put(self, *docs: dict[str, Any]) -> None:
        for d in docs:
            self.items[d["id"]] = d

    def answer(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        page = int(query.get("page", ["1"])[0])
        size = int(query.get("page_size", ["100"])[0])
        since = query.get("updated_since", [None])[0]
        self.requests.append((page, size, since))
        left = self.fail_pages.get(page, 0)
        if left:
            self.fail_pages[page] = left - 1 if left > 0 else left
            return 500, {"error": "boom"}
        rows = sorted(self.items.values(), key=lambda d: (str(d.get("updated_at")), d["id"]))
        if since is not None:
            rows = [d for d in rows if str(d.get("updated_at")) >= since]
        chunk = rows[(page - 1) * size : page * size]
        more = page * size < len(rows)
        body: dict[str, Any] = {"items": chunk, "next_page": page + 1 if more else None}
        if self.send_total:
            body["total"] = len(rows)
        return 200, body


@contextmanager
def serve_mall(mall: Mall) -> Iterator[Mall]:
    """Run the mall on a free local port in a thread; mall.url is its listing endpoint."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            status, body = mall.answer(parse_qs(parts.query))
            raw = json.dumps(body, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    mall.url = f"http://127.0.0.1:{server.server_address[1]}/api/catalog/items"
    try:
        yield mall
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- a recommender over a real store, for tests ------------------------------------------
@dataclass(frozen=True)
class TagW:
    """A profile tag (the shape of nlp.profile.TagWeight)."""

    tag: str
    weight: float
    last_seen: int = 0


@dataclass(frozen=True)
class Prof:
    """A profile (the shape of nlp.profile.Profile, as far as recommendations read it)."""

    tags: list[TagW]
    interest: Any = None
    groups: list[str] = field(default_factory=list)


class Profiles:
    """A ProfileSource over a dict: {("user"|"group", id): Prof}."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str], Prof] = {}

    def get(self, kind: str, id: str) -> Prof | None:
        return self.by_key.get((kind, id))


_TAG_SPACES: dict[int, Any] = {}


def build_recommender(store: Any, embedder: Any, *, profiles: Profiles | None = None,
                      items: Sequence[CatalogItem] = ()) -> Any:
    """Return a Recommender over a CatalogRepo in store, with items upserted and indexed."""
    from catalog.repo import CatalogRepo
    from nlp.index import VectorIndex
    from nlp.recommend import Recommender, TagSpace
    from nlp.signals import Signals

    repo = CatalogRepo(store, embedder=embedder)
    if items:
        repo.upsert(items)
    index = VectorIndex(repo, dim=embedder.dim)
    index.load()
    space = _TAG_SPACES.get(id(embedder))
    if space is None:
        space = _TAG_SPACES[id(embedder)] = TagSpace.default(embedder)
    return Recommender(index=index, items=repo, embedder=embedder, signals=Signals(store),
                       tags=space, profiles=profiles)
