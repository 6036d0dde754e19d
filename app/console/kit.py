"""The console's parts of one process, built once with the other services."""

from __future__ import annotations

from dataclasses import dataclass

from limits.storage import MemoryStorage, RedisStorage, Storage

from app.console.activity import ActivityRecorder, RequestCounter
from app.console.auth import ClientThrottle, ConsoleUsers, SessionSigner, session_key
from app.console.overrides import TaxonomyOverrides
from app.settings import Settings
from nlp.taxonomy import Taxonomy
from store import Store

REDIS_PREFIX = "mp:{ratelimit}"  # the public pages' prefix: one Cluster slot for both


@dataclass(frozen=True)
class ConsoleKit:
    """Accounts, sessions, counters and operator overrides (app/console/)."""

    users: ConsoleUsers
    signer: SessionSigner
    throttle: ClientThrottle  # login attempts per client
    recorder: ActivityRecorder  # counts applied messages (the pipeline calls it)
    requests: RequestCounter  # recommendations served, clicks (a middleware feeds it)
    taxonomy: TaxonomyOverrides
    secure_cookies: bool

    def close(self) -> None:
        """Write what is still buffered."""
        self.requests.close()


def build_console(settings: Settings, store: Store, *, taxonomy: Taxonomy) -> ConsoleKit:
    """Return the console's parts over the store."""
    storage: Storage = (RedisStorage(settings.redis_url, key_prefix=REDIS_PREFIX)
                        if settings.redis_url else MemoryStorage())
    return ConsoleKit(
        users=ConsoleUsers(store),
        signer=SessionSigner(session_key(settings.share_secret.get_secret_value()),
                             ttl_s=settings.console_session_ttl_s),
        throttle=ClientThrottle(limit=settings.console_login_rate_limit, storage=storage),
        recorder=ActivityRecorder(store, tz_offset_hours=settings.tz_offset_hours,
                                  half_life_s=settings.profile_half_life_days * 86_400),
        requests=RequestCounter(store, tz_offset_hours=settings.tz_offset_hours),
        taxonomy=TaxonomyOverrides(store, taxonomy, poll_s=settings.index_poll_s),
        secure_cookies=settings.public_base_url.startswith("https://"),
    )
