"""Storage: one Protocol (base.py), an embedded SQLite back-end and a Redis back-end."""

from pathlib import Path

from store.base import (
    Batch,
    CommitResult,
    QueueItem,
    Record,
    Store,
)

__all__ = ["Batch", "CommitResult", "QueueItem", "Record", "Store", "open_store"]


def open_store(*, redis_url: str | None, data_dir: Path,
               background_checkpoint: bool = False) -> Store:
    """Open the Redis back-end when a URL is given, else the embedded SQLite file.

    background_checkpoint (SQLite only; serving processes) moves WAL checkpoints off the
    request path onto a thread of the store.
    """
    if redis_url:
        from store.redis import RedisStore

        return RedisStore(redis_url)
    from store.sqlite import SQLiteStore

    return SQLiteStore(data_dir / "mingpian.db", background_checkpoint=background_checkpoint)
