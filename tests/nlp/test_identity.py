"""Identity links (issue 15 point 1): one person's ids resolve to one canonical id, their
profiles merge exactly once (decay-aware), messages of a linked id land on the person, and
links racing messages across processes lose nothing and count nothing twice."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from models.errors import ConflictError, NotFoundError
from models.messages import ChatMessage
from nlp.identity import IdentityRepo
from nlp.profile import NS_USER, ProfileRepo, decay, merge_docs
from nlp.signals import Signals
from nlp.tagging import TagHit, TagResult
from store.base import Store

T0 = 1_764_000_000
DAY = 86_400
ROOT = Path(__file__).resolve().parents[2]


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def msg(msg_id: str, *, user: str, ts: int = T0, group: str | None = "g1") -> ChatMessage:
    return ChatMessage(msg_id=msg_id, user_id=user, group_id=group, text="", ts=ts)


def tagged(tag: str, conf: float, vector: np.ndarray | None = None) -> TagResult:
    return TagResult(tags=[TagHit(tag, conf)], vector=vector, contentless=False)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def profiles(store: Store, clock: Clock) -> ProfileRepo:
    return ProfileRepo(store, half_life_days=30, clock=clock)


@pytest.fixture
def ids(store: Store, profiles: ProfileRepo) -> IdentityRepo:
    return IdentityRepo(store, profiles=profiles)


def test_point1_unlinked_ids_resolve_to_themselves(ids: IdentityRepo) -> None:
    assert ids.canonical("wm-ext-1") == "wm-ext-1"
    assert ids.resolve("wecom_external", "wm-ext-1") is None
    assert ids.linked_ids("wm-ext-1") == []
    assert ids.all_ids("wm-ext-1") == ["wm-ext-1"]


def test_point1_link_resolves_every_id_to_the_mall_id(ids: IdentityRepo) -> None:
    out = ids.link("mall-1", [("wecom_external", "wm-ext-1"), ("wechat_openid", "o-1")])
    assert out.person.id == "mall-1"
    assert out.added == [("mall", "mall-1"), ("wecom_external", "wm-ext-1"),
                         ("wechat_openid", "o-1")]
    for raw in ("mall-1", "wm-ext-1", "o-1"):
        assert ids.canonical(raw) == "mall-1"
    assert ids.resolve("wechat_openid", "o-1") == "mall-1"
    assert ids.resolve("wecom_external", "o-1") is None  # an id has one kind
    assert ids.resolve("mall", "mall-1") == "mall-1"
    assert ids.linked_ids("mall-1") == out.person.ids
    # A linked id names the person too: more ids go to the same person.
    again = ids.link("o-1", [("wechat_unionid", "un-1")])
    assert again.person.id == "mall-1" and again.added == [("wechat_unionid", "un-1")]
    assert ids.canonical_many(["un-1", "x"]) == {"un-1": "mall-1", "x": "x"}


def test_point1_an_id_belongs_to_one_person(ids: IdentityRepo) -> None:
    ids.link("mall-1", [("wecom_external", "wm-ext-1")])
    with pytest.raises(ConflictError, match="another person"):
        ids.link("mall-2", [("wecom_external", "wm-ext-1")])
    with pytest.raises(ConflictError, match="linked as wecom_external"):
        ids.link("mall-1", [("wechat_openid", "wm-ext-1")])
    with pytest.raises(ConflictError, match="another person"):
        ids.link("mall-2", [("mall", "mall-1")])  # another person's own id
    assert ids.canonical("mall-2") == "mall-2"  # a refused link wrote nothing
    assert ids.linked_ids("mall-2") == []


def test_point1_merge_is_decay_aware_and_adds_counts(profiles: ProfileRepo,
                                                     ids: IdentityRepo, clock: Clock) -> None:
    # The chat id said 辅食添加 (1.0) 30 days before the mall id said it (1.0): at the later
    # time the chat's weight is half, so the merged weight is 1.5, not 2.
    v1, v2 = np.eye(4, dtype=np.float32)[0], np.eye(4, dtype=np.float32)[1]
    profiles.apply(msg=msg("a1", user="wm-ext-1", ts=T0), result=tagged("辅食添加", 1.0, v1))
    profiles.apply(msg=msg("a2", user="wm-ext-1", ts=T0 + 1, group="g2"),
                   result=TagResult(tags=[], vector=None, contentless=True))
    profiles.apply(msg=msg("b1", user="mall-1", ts=T0 + 30 * DAY), result=tagged("辅食添加", 1.0, v2))
    profiles.apply(msg=msg("b2", user="mall-1", ts=T0 + 30 * DAY), result=tagged("睡眠", 0.5))
    clock.now = T0 + 30 * DAY
    out = ids.link("mall-1", [("wecom_external", "wm-ext-1")])
    assert out.merged == ["wm-ext-1"]
    assert profiles.get("user", "wm-ext-1") is None  # folded into the person's, then gone
    p = profiles.get("user", "mall-1", now=T0 + 30 * DAY)
    assert p is not None
    assert p.message_count == 4
    assert {t.tag: round(t.weight, 4) for t in p.tags} == {"辅食添加": 1.5, "睡眠": 0.5}
    assert p.tag_counts == {"辅食添加": 2, "睡眠": 1}
    assert set(p.groups) == {"g1", "g2"}
    # The chat's direction counts half as much as the mall id's (one half-life older).
    assert p.interest is not None
    assert np.allclose(p.interest, np.array([0.5, 1, 0, 0]) / np.sqrt(1.25), atol=2e-3)
    # Linking again merges nothing (exactly once): the counts stay.
    assert ids.link("mall-1", [("wecom_external", "wm-ext-1")]).merged == []
    p2 = profiles.get("user", "mall-1", now=T0 + 30 * DAY)
    assert p2 is not None and p2.message_count == 4


def test_point1_merge_docs_is_symmetric_in_weights() -> None:
    a = {"ref": T0, "tags": {"x": [1.0, T0]}, "vec": None, "vw": 0.0, "n": 2,
         "last_seen": T0, "updated_at": T0, "groups": ["g1"], "tc": {"x": 2}}
    b = {"ref": T0 + 60 * DAY, "tags": {"x": [1.0, T0 + 60 * DAY], "y": [2.0, T0]},
         "vec": None, "vw": 0.0, "n": 3, "last_seen": T0 + 60 * DAY,
         "updated_at": T0 + 60 * DAY, "groups": ["g2", "g1"], "tc": {"x": 1, "y": 4}}
    ab, ba = merge_docs(a, b, half_life_s=30 * DAY), merge_docs(b, a, half_life_s=30 * DAY)
    for m in (ab, ba):
        assert m["ref"] == T0 + 60 * DAY
        assert m["tags"] == {"x": [1.25, T0 + 60 * DAY], "y": [2.0, T0]}
        assert m["n"] == 5 and m["tc"] == {"x": 3, "y": 4}


def test_point1_messages_of_a_linked_id_land_on_the_person(profiles: ProfileRepo,
                                                           ids: IdentityRepo) -> None:
    ids.link("mall-1", [("wecom_external", "wm-ext-1")])
    profiles.apply_many([(msg("c1", user="wm-ext-1"), tagged("防晒", 0.8)),
                         (msg("c2", user="mall-1"), tagged("防晒", 0.2)),
                         (msg("c3", user="stranger"), tagged("防晒", 0.1))])
    assert profiles.get("user", "wm-ext-1") is None
    p = profiles.get("user", "mall-1", now=T0)
    assert p is not None and p.message_count == 2
    assert round(p.tags[0].weight, 4) == 1.0
    stranger = profiles.get("user", "stranger")
    assert stranger is not None and stranger.message_count == 1


def test_point1_unlink(ids: IdentityRepo, profiles: ProfileRepo) -> None:
    ids.link("mall-1", [("wecom_external", "wm-ext-1"), ("wechat_openid", "o-1")])
    with pytest.raises(ConflictError, match="own id"):
        ids.unlink("mall", "mall-1")
    with pytest.raises(NotFoundError):
        ids.unlink("wechat_openid", "wm-ext-1")  # linked, but as another kind
    person = ids.unlink("wechat_openid", "o-1")
    assert person.ids == [("mall", "mall-1"), ("wecom_external", "wm-ext-1")]
    assert ids.canonical("o-1") == "o-1"
    profiles.apply(msg=msg("d1", user="o-1"), result=tagged("睡眠", 1.0))
    assert profiles.get("user", "o-1") is not None  # its own profile again
    # Now o-1 may go to another person.
    assert ids.link("mall-2", [("wechat_openid", "o-1")]).merged == ["o-1"]


def test_point1_forget_drops_every_link(ids: IdentityRepo) -> None:
    ids.link("mall-1", [("wecom_external", "wm-ext-1"), ("wechat_openid", "o-1")])
    assert sorted(ids.forget("o-1")) == ["mall-1", "o-1", "wm-ext-1"]
    for raw in ("mall-1", "wm-ext-1", "o-1"):
        assert ids.canonical(raw) == raw
    assert ids.linked_ids("mall-1") == []


@pytest.mark.redis
def test_point1_links_racing_messages_in_processes_lose_nothing(
        backend: str, store: Store, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Three processes apply 200 messages each from a chat id, an openid and the mall id,
    while two more link the chat id and the openid to the mall id, in opposite orders, as
    soon as the chat id's profile shows messages. Every message counts once, on the
    person's profile, and each merge happened exactly once."""
    target = (request.getfixturevalue("clean_redis_url") if backend == "redis"
              else str(tmp_path / "store.db"))
    start_at = str(time.time() + 1.5)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = str(ROOT / "tests/nlp/identity_worker.py")
    roles = ["msgs:wm-ext-1:0", "msgs:o-1:1000", "msgs:mall-1:2000",
             "link:wm-ext-1,o-1", "link:o-1,wm-ext-1"]
    procs = [subprocess.Popen([sys.executable, worker, backend, target, role, start_at],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
             for role in roles]
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0
        outs.append(out.split())
    assert sum(int(o[0]) for o in outs[:3]) == 600  # each message applied once
    merged = [m for o in outs[3:] for m in o[1:]]
    assert sorted(merged) == sorted(set(merged))  # no id merged twice
    assert "wm-ext-1" in merged  # the linkers waited for its messages
    repo = ProfileRepo(store, half_life_days=30)
    ids = IdentityRepo(store, profiles=repo)
    assert {ids.canonical(u) for u in ("wm-ext-1", "o-1", "mall-1")} == {"mall-1"}
    assert store.get(NS_USER, "wm-ext-1") is None and store.get(NS_USER, "o-1") is None
    person = repo.get("user", "mall-1", now=T0 + 3000)
    assert person is not None and person.message_count == 600
    # 600 messages tagged 睡眠 at 0.5, each decayed from its own time, whichever profile it
    # was first folded into (weights are stored rounded to 1e-6).
    want = sum(0.5 * decay(T0 + 3000 - (T0 + i), 30 * DAY)
               for first in (0, 1000, 2000) for i in range(first, first + 200))
    assert abs(person.tags[0].weight - want) < 1e-3
    assert person.tag_counts == {"睡眠": 600}


def test_point1_purchases_of_a_linked_id_become_the_persons(store: Store,
                                                            ids: IdentityRepo) -> None:
    signals = Signals(store)
    signals.record_purchases("o-1", ["sku-1"], ts=T0)
    signals.record_purchases("mall-1", ["sku-2"], ts=T0)
    ids.link("mall-1", [("wechat_openid", "o-1")])
    assert signals.bought("mall-1") == {"sku-1", "sku-2"}
    assert signals.bought("o-1") == frozenset()
