"""Profiles: decay over a controlled clock, exactly-once application, groups, erasure,
and no lost update with several worker processes on one store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from models.messages import ChatMessage
from models.vectors import decode_vector, encode_vector
from nlp.profile import NS_USER, VECTOR_PRECISION, ProfileRepo, decay
from nlp.tagging import TagHit, TagResult
from store.base import Store
from tests.nlp.conftest import unit
from tests.nlp.support import dump_store

T0 = 1_764_000_000
DAY = 86_400
ROOT = Path(__file__).resolve().parents[2]


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def msg(msg_id: str, *, user: str = "u1", group: str | None = "g1", ts: int = T0) -> ChatMessage:
    return ChatMessage(msg_id=msg_id, user_id=user, group_id=group, text="", ts=ts)


def result(*tags: tuple[str, float], vector: np.ndarray | None = None) -> TagResult:
    return TagResult(tags=[TagHit(t, c) for t, c in tags], vector=vector,
                     contentless=vector is None and not tags)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def repo(store: Store, clock: Clock) -> ProfileRepo:
    return ProfileRepo(store, half_life_days=30, clock=clock)


def weights(repo: ProfileRepo, kind: str = "user", id: str = "u1",
            now: float | None = None) -> dict[str, float]:
    p = repo.get("user" if kind == "user" else "group", id, now=now)
    assert p is not None
    return {t.tag: round(t.weight, 4) for t in p.tags}


def test_weights_halve_every_half_life(repo: ProfileRepo, clock: Clock) -> None:
    assert repo.apply(msg=msg("m1"), result=result(("睡眠", 0.8), vector=unit(1)))
    assert weights(repo) == {"睡眠": 0.8}
    clock.now = T0 + 30 * DAY
    assert weights(repo) == {"睡眠": 0.4}
    assert weights(repo, now=T0 + 60 * DAY) == {"睡眠": 0.2}
    # A new message adds to the decayed weight, and the ranking follows recency.
    assert repo.apply(msg=msg("m2", ts=T0 + 30 * DAY), result=result(("辅食添加", 0.6)))
    p = repo.get("user", "u1")
    assert p is not None
    assert [(t.tag, round(t.weight, 4), t.last_seen) for t in p.tags] == [
        ("辅食添加", 0.6, T0 + 30 * DAY), ("睡眠", 0.4, T0)]
    assert p.message_count == 2 and p.last_seen == T0 + 30 * DAY
    assert p.updated_at == T0 + 30 * DAY


def test_a_late_message_counts_as_old(repo: ProfileRepo) -> None:
    repo.apply(msg=msg("new", ts=T0 + 60 * DAY), result=result(("睡眠", 1.0)))
    repo.apply(msg=msg("old", ts=T0), result=result(("睡眠", 1.0), ("奶粉", 1.0)))
    assert weights(repo, now=T0 + 60 * DAY) == {"睡眠": 1.25, "奶粉": 0.25}


def test_every_message_counts_once_even_chitchat(repo: ProfileRepo) -> None:
    assert repo.apply(msg=msg("a"), result=result())  # 好的: no tags, no vector
    assert repo.apply(msg=msg("b"), result=result(("睡眠", 0.9), vector=unit(2)))
    assert not repo.apply(msg=msg("a"), result=result())
    assert not repo.apply(msg=msg("b"), result=result(("睡眠", 0.9), vector=unit(2)))
    p = repo.get("user", "u1")
    assert p is not None and p.message_count == 2 and weights(repo) == {"睡眠": 0.9}


def test_interest_is_the_decayed_mean_of_embeddings(repo: ProfileRepo) -> None:
    a, b = np.zeros(512, np.float32), np.zeros(512, np.float32)
    a[0], b[1] = 1.0, 1.0
    repo.apply(msg=msg("m1", ts=T0), result=result(("睡眠", 0.9), vector=a))
    repo.apply(msg=msg("m2", ts=T0 + 30 * DAY), result=result(("奶粉", 0.9), vector=b))
    p = repo.get("user", "u1", now=T0 + 30 * DAY)
    assert p is not None and p.interest is not None
    expected = (0.5 * a + b) / np.linalg.norm(0.5 * a + b)
    assert np.allclose(p.interest, expected, atol=2e-3)
    assert abs(float(np.linalg.norm(p.interest)) - 1.0) < 1e-5
    # Untagged but contentful chatter pulls the vector less than a tagged message.
    repo.apply(msg=msg("m3", ts=T0 + 30 * DAY), result=result(vector=a))
    q = repo.get("user", "u1", now=T0 + 30 * DAY)
    assert q is not None and q.interest is not None
    assert q.interest[1] > q.interest[0] > p.interest[0]


def test_vectors_are_stored_compactly() -> None:
    v = unit(3)
    text = encode_vector(v, precision=VECTOR_PRECISION)
    assert len(text) < 1400
    assert np.allclose(decode_vector(text, precision=VECTOR_PRECISION), v, atol=1e-3)


def test_groups_aggregate_their_members(repo: ProfileRepo) -> None:
    repo.apply(msg=msg("m1", user="u1"), result=result(("睡眠", 0.8), vector=unit(4)))
    repo.apply(msg=msg("m2", user="u2"), result=result(("睡眠", 0.6), ("奶粉", 0.5)))
    repo.apply(msg=msg("m3", user="u2", group="g2"), result=result(("早教", 0.7)))
    repo.apply(msg=msg("m4", user="u3", group=None), result=result(("早教", 0.9)))
    g1 = repo.get("group", "g1")
    assert g1 is not None and g1.message_count == 2 and g1.groups == []
    assert weights(repo, "group", "g1") == {"睡眠": 1.4, "奶粉": 0.5}
    assert weights(repo, "group", "g2") == {"早教": 0.7}
    u2 = repo.get("user", "u2")
    assert u2 is not None and u2.groups == ["g1", "g2"] and u2.message_count == 2
    assert repo.get("group", "nope") is None and repo.get("user", "nope") is None
    u3 = repo.get("user", "u3")
    assert u3 is not None and u3.groups == []


def test_erasure_leaves_nothing_of_the_user(repo: ProfileRepo, store: Store) -> None:
    repo.apply(msg=msg("m1", user="u-erase-me"), result=result(("睡眠", 0.8), vector=unit(5)))
    repo.apply(msg=msg("m2", user="u-other"), result=result(("奶粉", 0.5)))
    assert "u-erase-me" in dump_store(store)
    repo.erase_user("u-erase-me")
    assert repo.get("user", "u-erase-me") is None
    assert "u-erase-me" not in dump_store(store)
    assert repo.get("user", "u-other") is not None
    group = repo.get("group", "g1")  # the anonymous aggregate stays
    assert group is not None and group.message_count == 2
    # A replay of the erased user's message does not bring the profile back.
    assert not repo.apply(msg=msg("m1", user="u-erase-me"), result=result(("睡眠", 0.8)))
    assert repo.get("user", "u-erase-me") is None
    assert store.count(NS_USER) == 1


def test_decay_never_grows() -> None:
    assert decay(-5 * DAY, 30 * DAY) == 1.0
    assert decay(30 * DAY, 30 * DAY) == 0.5


@pytest.mark.redis
@pytest.mark.parametrize("batch", [0, 16], ids=["one-by-one", "batches-of-16"])
def test_concurrent_workers_never_lose_an_update(backend: str, store: Store, tmp_path: Path,
                                                 request: pytest.FixtureRequest,
                                                 batch: int) -> None:
    """Four processes hammer one user and one group; ranges overlap so that the same
    message is also raced by two processes. In batches, batches that share messages race
    on the profiles and on the once-markers."""
    target = (request.getfixturevalue("clean_redis_url") if backend == "redis"
              else str(tmp_path / "store.db"))
    ranges = [(0, 100), (50, 150), (100, 200), (150, 250)]
    start_at = str(time.time() + 1.5)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests/nlp/profile_worker.py"),
                               backend, target, str(a), str(b), start_at, str(batch)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
             for a, b in ranges]
    applied, conflicts = 0, 0
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        a, c = out.split()
        applied, conflicts = applied + int(a), conflicts + int(c)
    assert applied == 250  # each message applied by exactly one process
    if not batch:
        assert conflicts > 0  # the processes did race, and lost races were retried
    repo = ProfileRepo(store, half_life_days=30)
    now = T0 + 249
    user, group = repo.get("user", "u-hot", now=now), repo.get("group", "g-hot", now=now)
    assert user is not None and group is not None
    assert user.message_count == group.message_count == 250
    # 125 odd messages tagged 睡眠 at 0.5, within minutes: 62.5 less a little decay.
    assert 62.49 < user.tags[0].weight <= 62.5
    assert abs(group.tags[0].weight - user.tags[0].weight) < 1e-9
    if batch:
        assert user.interest is not None and np.allclose(
            user.interest, np.ones(8) / np.sqrt(8), atol=2e-3)
