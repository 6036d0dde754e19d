"""A process of the identity race test (tests/nlp/test_identity.py): either applies 200
messages from one user id, one at a time, or links ids to ``mall-1`` once the chat id's
profile shows messages; prints what it did."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from models.messages import ChatMessage
from nlp.identity import IdentityRepo
from nlp.profile import ProfileRepo
from nlp.tagging import TagHit, TagResult
from store.base import Store

T0 = 1_764_000_000
N = 200


def _open(backend: str, target: str) -> Store:
    if backend == "redis":
        from store.redis import RedisStore

        return RedisStore(target)
    from store.sqlite import SQLiteStore

    return SQLiteStore(Path(target))


def main() -> None:
    backend, target, role, start_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    store = _open(backend, target)
    repo = ProfileRepo(store, half_life_days=30)
    what, _, arg = role.partition(":")
    while time.time() < start_at:  # start together, so that the processes really race
        time.sleep(0.001)
    if what == "msgs":
        user, first = arg.split(":")
        applied = 0
        for i in range(int(first), int(first) + N):
            msg = ChatMessage(msg_id=f"m{i}", user_id=user, group_id="g-hot", text="",
                              ts=T0 + i)
            applied += repo.apply(msg=msg, result=TagResult(
                tags=[TagHit("睡眠", 0.5)], vector=None, contentless=False))
        print(applied)
    else:
        ids = IdentityRepo(store, profiles=repo)
        # Link while messages flow: once the chat id has a profile of some messages.
        while (p := repo.get("user", "wm-ext-1")) is None or p.message_count < 20:
            if ids.canonical("wm-ext-1") != "wm-ext-1":
                break  # the other linker was first
            time.sleep(0.002)
        kinds = {"wm-ext-1": "wecom_external", "o-1": "wechat_openid"}
        merged: list[str] = []
        for raw in arg.split(","):
            merged += ids.link("mall-1", [(kinds[raw], raw)]).merged
        print(0, *merged)
    store.close()


if __name__ == "__main__":
    main()
