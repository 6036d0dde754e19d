"""The worker's tag write-back job (issue 15 point 3): every `MINGPIAN_TAGS__INTERVAL_S`,
one process (the first to claim the interval's slot) brings contacts' WeCom tags in step."""

from __future__ import annotations

import math
import threading
import time

from app.services import Services
from bot.tags import run_tag_sync


def start_tag_sync(services: Services, *, stop: threading.Event) -> threading.Thread | None:
    """Start the tag job's thread (None when WeCom or the job is off); it ends with stop."""
    s = services.settings.tags
    sync = services.customers.tags
    if not s.enabled or not sync.enabled or s.interval_s <= 0:
        return None
    every = s.interval_s

    def claim() -> bool:
        slot = int(time.time() // every)
        return services.store.first_seen(f"tagsync-slot:{slot}", max(1, math.ceil(every * 2)))

    t = threading.Thread(target=run_tag_sync, args=(sync,),
                         kwargs={"stop": stop, "interval_s": every, "claim": claim},
                         name="mingpian-tag-sync", daemon=True)
    t.start()
    return t
