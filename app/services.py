"""The heavy objects of one process, built once from settings and shared by HTTP and workers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.settings import Settings
from store import QueueItem, Store, open_store

log = logging.getLogger("mingpian.services")

INBOX = "inbox"


@dataclass
class Services:
    """Everything a request handler or a worker needs; built by build_services()."""

    settings: Settings
    store: Store
    inbox_handler: Callable[[Sequence[QueueItem]], None]

    def close(self) -> None:
        """Release every resource."""
        self.store.close()


def build_services(settings: Settings, *, store: Store | None = None) -> Services:
    """Open the store (and, as issues land, the models and indexes) for this process."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    st = store or open_store(redis_url=settings.redis_url, data_dir=settings.data_dir)
    return Services(settings=settings, store=st, inbox_handler=_no_handler)


def _no_handler(items: Sequence[QueueItem]) -> None:
    raise RuntimeError("no inbox handler is wired: items stay queued")
