"""Issue 12 point 2: erasure leaves a tombstone that holds against a worker racing it, on
both back-ends (CONTRACTS §8)."""

from __future__ import annotations

from models.messages import ChatMessage
from nlp.profile import NS_ERASED, NS_USER, ProfileRepo, erased_at
from nlp.tagging import TagHit, TagResult
from store.base import Store
from tests.nlp.support import dump_store

T0 = 1_764_000_000


def _msg(msg_id: str, *, user: str = "u-gone", ts: int = T0) -> ChatMessage:
    return ChatMessage(msg_id=msg_id, user_id=user, group_id="g1", text="", ts=ts)


def _tags() -> TagResult:
    return TagResult(tags=[TagHit("睡眠", 0.8)], vector=None, contentless=False)


def test_point2_erasure_between_read_and_commit_drops_the_message(store: Store) -> None:
    ProfileRepo(store, half_life_days=30, clock=lambda: T0).apply(
        msg=_msg("m0", ts=T0 - 5), result=_tags())  # the user has a profile
    # Another process erases the user after this worker read the profiles and the
    # tombstones, before it commits: the worker reads its clock exactly there.
    other = ProfileRepo(store, half_life_days=30, clock=lambda: T0 + 10)
    calls = 0
    victim = "u-gone"

    def racing_clock() -> float:
        nonlocal calls
        calls += 1
        if calls == 1:
            other.erase_user(victim)
        return T0 + 10

    worker = ProfileRepo(store, half_life_days=30, clock=racing_clock)
    applied = worker.apply_many([(_msg("m1"), _tags()), (_msg("m2", user="u-other"), _tags())])
    assert calls == 2  # the first commit conflicted; the second left m1 out
    assert applied == [False, True]
    assert worker.get("user", "u-gone") is None
    # A user with no profile yet: only the tombstone's version tells the commit.
    calls, victim = 0, "u-new"
    assert worker.apply(msg=_msg("m3", user="u-new"), result=_tags()) is False
    assert calls == 1
    assert worker.get("user", "u-new") is None
    assert worker.get("user", "u-other") is not None
    group = worker.get("group", "g1")
    assert group is not None and group.message_count == 2  # m0 and m2; m1, m3 never landed


def test_point2_tombstone_drops_old_messages_and_keeps_no_user_id(store: Store) -> None:
    repo = ProfileRepo(store, half_life_days=30, clock=lambda: T0)
    repo.apply(msg=_msg("m1", ts=T0 - 60), result=_tags())
    assert erased_at(store, "u-gone") is None
    at = repo.erase_user("u-gone")
    assert at == T0 and erased_at(store, "u-gone") == T0
    assert store.count(NS_ERASED) == 1 and "u-gone" not in dump_store(store)
    # Sent at or before the erasure: dropped, in a batch or alone.
    assert repo.apply_many([(_msg("m2", ts=T0 - 30), _tags()),
                            (_msg("m3", ts=T0), _tags())]) == [False, False]
    assert repo.get("user", "u-gone") is None
    # Sent after it: a fresh profile.
    assert repo.apply(msg=_msg("m4", ts=T0 + 1), result=_tags())
    fresh = repo.get("user", "u-gone")
    assert fresh is not None and fresh.message_count == 1
    # Erasing again moves the tombstone on; it never moves back.
    later = ProfileRepo(store, half_life_days=30, clock=lambda: T0 + 100)
    assert later.erase_user("u-gone") == T0 + 100
    assert repo.erase_user("u-gone") == T0 + 100
    assert store.get(NS_USER, "u-gone") is None
