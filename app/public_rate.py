"""Per-client rate limit of the public card pages (`/c`, `/s`, `/r`, posters; §6).

Anyone can request these pages, and each one records a visit, counts a click or may draw a
poster, so one client must not be able to pump the salesperson's radar or the "popular"
list. `limits` keeps the counters (a moving window): in this process's memory on SQLite,
in Redis when the store is Redis, so every `serve` process shares one budget per client.
The client is the address app/clientaddr.py believes (X-Forwarded-For only from our own
proxies).
"""

from __future__ import annotations

import math
import time

from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from app.clientaddr import Network, client_address, parse_networks
from app.settings import Settings
from models.errors import RateLimitedError

# One hash tag for every counter: the limiter's scripts stay in one Redis Cluster slot.
REDIS_PREFIX = "mp:{ratelimit}"


class PublicLimiter:
    """The public pages' limit for one process: who the client is, and whether it may pass."""

    def __init__(self, *, limit: str, trusted_proxies: tuple[Network, ...],
                 storage: Storage) -> None:
        self.item: RateLimitItem = parse(limit)
        self.trusted_proxies = trusted_proxies
        self.limiter = MovingWindowRateLimiter(storage)

    @classmethod
    def from_settings(cls, settings: Settings) -> PublicLimiter:
        """Return the limiter the settings describe (Redis storage when redis_url is set)."""
        storage: Storage = (RedisStorage(settings.redis_url, key_prefix=REDIS_PREFIX)
                            if settings.redis_url else MemoryStorage())
        return cls(limit=settings.public_rate_limit,
                   trusted_proxies=parse_networks(settings.trusted_proxies), storage=storage)

    def client(self, request: Request) -> str:
        """Return the client's address as text (the raw peer when it is not an IP)."""
        addr = client_address(request.scope, self.trusted_proxies)
        if addr is not None:
            return str(addr)
        peer = request.client.host if request.client else "unknown"
        return f"peer:{peer}"

    def check(self, client: str) -> None:
        """Count one request of client; raise RateLimitedError beyond the limit."""
        if self.limiter.hit(self.item, "public", client):
            return
        stats = self.limiter.get_window_stats(self.item, "public", client)
        retry = math.ceil(stats.reset_time - time.time())
        raise RateLimitedError(f"too many requests: the limit is {self.item}",
                               retry_after_s=retry)


def get_public_limiter(request: Request) -> PublicLimiter:
    """Return the app's limiter (built by create_app)."""
    limiter: PublicLimiter = request.app.state.public_limiter
    return limiter


def limit_public(request: Request) -> None:
    """Dependency of every public page: count the client's request, 429 beyond the limit."""
    limiter = get_public_limiter(request)
    limiter.check(limiter.client(request))


PublicRateLimit = Depends(limit_public)
