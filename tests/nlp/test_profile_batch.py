"""Profiles applied a batch at a time: the same documents as one message at a time, each
message exactly once across redeliveries, overlapping batches and racing processes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from models.messages import ChatMessage
from nlp.pipeline import MessagePipeline
from nlp.profile import NS_GROUP, NS_USER, ProfileRepo
from nlp.tagging import Tagger, TagHit, TagResult
from store.base import JSON, Store
from store.redis import RedisStore
from store.sqlite import SQLiteStore
from tests.nlp.conftest import unit
from tests.nlp.test_profile import DAY, T0, Clock, msg, result

TAGS = ["睡眠", "奶粉", "辅食添加", "早教", "湿疹"]


def _second_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    """Another empty store of the same back-end (on Redis: the same server, another prefix)."""
    if backend == "redis":
        return RedisStore(request.getfixturevalue("redis_url"), prefix="mp-b")
    return SQLiteStore(tmp_path / "second.db")


def _docs(store: Store) -> dict[tuple[str, str], JSON]:
    return {(ns, k): rec.doc for ns in (NS_USER, NS_GROUP) for k, rec in store.scan(ns)}


def _versions(store: Store) -> dict[tuple[str, str], int]:
    return {(ns, k): rec.version for ns in (NS_USER, NS_GROUP) for k, rec in store.scan(ns)}


def _random_chat(n: int, seed: int) -> list[tuple[ChatMessage, TagResult]]:
    """Messages of a few users in a few groups, out of order in time, with repeated msg_ids,
    same-second messages, long silences (tags decaying away) and faint or doubled tags."""
    rng = random.Random(seed)
    out = []
    ts = T0
    for i in range(n):
        step = rng.choice([3_600, 3_600, 0, 5 * DAY, 400 * DAY])
        ts += step if step != 400 * DAY or rng.random() < 0.05 else 3_600
        # Sometimes an archived message from weeks before.
        m = ChatMessage(msg_id=f"m{rng.randrange(n) if rng.random() < 0.1 else i}",
                        user_id=f"u{rng.randrange(6)}", group_id=rng.choice(["g0", "g1", None]),
                        text="", ts=ts - (40 * DAY if rng.random() < 0.15 else 0))
        hits = [TagHit(t, round(rng.choice([rng.uniform(0.4, 1.0), 0.0002]), 4))
                for t in rng.sample(TAGS, rng.randrange(3))]
        hits += hits[:1] if rng.random() < 0.05 else []
        vec = unit(rng.randrange(10_000)) if rng.random() < 0.7 else None
        out.append((m, TagResult(tags=hits, vector=vec, contentless=not hits and vec is None)))
    return out


def test_a_batch_gives_what_one_by_one_gives(backend: str, store: Store, tmp_path: Path,
                                             request: pytest.FixtureRequest) -> None:
    chat = _random_chat(300, seed=11)
    clock = Clock(T0 + 400 * DAY)
    one = ProfileRepo(store, half_life_days=30, clock=clock)
    other = _second_store(backend, tmp_path, request)
    try:
        many = ProfileRepo(other, half_life_days=30, clock=clock)
        singly = [one.apply(msg=m, result=r) for m, r in chat]
        batched: list[bool] = []
        start = 0
        for size in (1, 7, 64, 3, 100, 64, 61):
            batched += many.apply_many(chat[start:start + size])
            start += size
        assert start == len(chat)
        assert batched == singly and 250 < sum(singly) < 300  # some msg_ids repeat
        assert _docs(other) == _docs(store)  # every byte of every profile document
        assert len(_docs(store)) == 8  # 6 users, 2 groups
    finally:
        other.close()


def test_a_batch_of_applied_and_new_messages_applies_only_the_new(store: Store) -> None:
    repo = ProfileRepo(store, half_life_days=30, clock=Clock(T0))
    chat = [(msg(f"m{i}", ts=T0 + i), result((TAGS[i], 0.5), vector=unit(i)))
            for i in range(5)]
    assert repo.apply_many(chat[:3]) == [True] * 3
    # A redelivery of part of that batch with two new messages among the old.
    mixed = [chat[1], chat[3], chat[0], chat[4], chat[2]]
    assert repo.apply_many(mixed) == [False, True, False, True, False]
    user, group = repo.get("user", "u1", now=T0), repo.get("group", "g1", now=T0)
    assert user is not None and group is not None
    assert user.message_count == group.message_count == 5
    assert {t.tag: round(t.weight, 4) for t in user.tags} == dict.fromkeys(TAGS[:5], 0.5)
    # The same documents as the five applied once each, in the order they were applied.
    alone = ProfileRepo(store, half_life_days=30, clock=Clock(T0))
    for i in (0, 1, 2, 3, 4):
        m, r = chat[i]
        assert alone.apply(msg=m.model_copy(update={"user_id": "u-alone", "group_id": None,
                                                    "msg_id": f"alone-{i}"}), result=r)
    a, b = store.get(NS_USER, "u1"), store.get(NS_USER, "u-alone")
    assert a is not None and b is not None
    assert {**a.doc, "groups": []} == b.doc
    # Every message of a full redelivery is skipped, and nothing is written.
    versions = _versions(store)
    assert repo.apply_many(mixed) == [False] * 5
    assert _versions(store) == versions


def test_a_msg_id_twice_in_one_batch_applies_once(store: Store) -> None:
    repo = ProfileRepo(store, half_life_days=30, clock=Clock(T0))
    first, again = (msg("m1"), result(("睡眠", 0.8))), (msg("m1"), result(("睡眠", 0.8)))
    assert repo.apply_many([first, (msg("m2"), result()), again]) == [True, True, False]
    p = repo.get("user", "u1", now=T0)
    assert p is not None and p.message_count == 2 and p.tags[0].weight == pytest.approx(0.8)
    assert repo.apply_many([]) == []


def test_the_pipeline_applies_only_the_new_messages_of_a_batch(store: Store,
                                                              tagger: Tagger) -> None:
    pipe = MessagePipeline(store=store, tagger=tagger, retain_messages=True,
                           profiles=ProfileRepo(store, half_life_days=30))
    texts = ["宝宝六个月了，辅食先加什么好？", "娃晚上老醒", "好的", "有没有推荐的婴儿湿疹霜",
             "奶粉换牌子要注意什么"]
    chat = [ChatMessage(msg_id=f"p{i}", user_id="u-mom", group_id="g-muying", text=t,
                        ts=T0 + i, platform="wecom") for i, t in enumerate(texts)]
    assert [p.applied for p in pipe.process(chat[:3])] == [True] * 3
    out = pipe.process([chat[2], chat[3], chat[0], chat[4]])
    assert [p.applied for p in out] == [False, True, False, True]
    assert [h.tag for h in out[1].result.tags][:1] == ["湿疹"]  # tagged all the same
    mom, group = pipe.profiles.get("user", "u-mom"), pipe.profiles.get("group", "g-muying")
    assert mom is not None and group is not None
    assert mom.message_count == group.message_count == 5
    assert [m["msg_id"] for m in pipe.list_messages("u-mom")] == [f"p{i}" for i in range(5)]
