"""The mall's catalog API (CONTRACTS §4): ``GET URL?page=N&page_size=M&updated_since=T``
answers ``{"items": [...], "next_page": N | null}`` (and, optionally, ``"total"``: how many
items the whole listing holds, which lets the progress bar show an ETA)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from models.errors import UpstreamError

log = logging.getLogger("mingpian.sync")

_RETRY_STATUS = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Page:
    """One page of the listing; items are raw JSON values, validated by the caller."""

    items: list[Any]
    next_page: int | None
    total: int | None = None


class MallSource:
    """An HTTP client for the mall's paged listing, with retries on transient failures."""

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None,
                 timeout_s: float = 30.0, retries: int = 3, backoff_s: float = 0.5,
                 client: httpx.Client | None = None) -> None:
        self.url = url
        self.retries = retries
        self.backoff_s = backoff_s
        self._own = client is None
        self.client = client or httpx.Client(timeout=timeout_s, headers=dict(headers or {}),
                                             follow_redirects=False)

    def fetch(self, *, page: int, page_size: int, updated_since: str | None) -> Page:
        """Return one page; raise UpstreamError once retries are exhausted."""
        params: dict[str, str | int] = {"page": page, "page_size": page_size}
        if updated_since is not None:
            params["updated_since"] = updated_since
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                r = self.client.get(self.url, params=params)
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
                log.warning("mall page %d: %s (attempt %d)", page, last, attempt + 1)
                continue
            if r.status_code in _RETRY_STATUS:
                last = f"HTTP {r.status_code}"
                log.warning("mall page %d: %s (attempt %d)", page, last, attempt + 1)
                continue
            if r.status_code != httpx.codes.OK:
                raise UpstreamError(f"mall answered HTTP {r.status_code} for page {page}")
            return _parse(r, page)
        raise UpstreamError(f"mall page {page} failed after {self.retries + 1} attempts: {last}")

    def close(self) -> None:
        """Close the HTTP client if this source made it."""
        if self._own:
            self.client.close()


def _parse(r: httpx.Response, page: int) -> Page:
    try:
        doc = r.json()
    except ValueError as e:
        raise UpstreamError(f"mall page {page} is not JSON") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise UpstreamError(f"mall page {page} has no 'items' list")
    nxt = doc.get("next_page")
    if nxt is not None and (not isinstance(nxt, int) or isinstance(nxt, bool) or nxt <= page):
        # A next_page that does not move forward would loop for ever.
        raise UpstreamError(f"mall page {page} names next_page {nxt!r}")
    total = doc.get("total")
    return Page(items=doc["items"], next_page=nxt,
                total=total if isinstance(total, int) and not isinstance(total, bool) else None)
