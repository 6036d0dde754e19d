"""One contract suite, run against SQLite and a real redis-server."""

from __future__ import annotations

import threading
import time

from store.base import Batch, CommitResult, Store


def test_records_put_get_versions_delete(store: Store) -> None:
    assert store.get("profile.user", "u1") is None
    assert store.put("profile.user", "u1", {"name": "小雨", "n": 1}) == 1
    assert store.put("profile.user", "u1", {"name": "小雨", "n": 2}) == 2
    rec = store.get("profile.user", "u1")
    assert rec is not None and rec.doc == {"name": "小雨", "n": 2} and rec.version == 2
    assert store.delete("profile.user", "u1") is True
    assert store.delete("profile.user", "u1") is False
    assert store.get("profile.user", "u1") is None


def test_scan_count_and_prefix(store: Store) -> None:
    for i in range(25):
        store.put("catalog.items", f"sku-{i:03d}", {"i": i})
    store.put("catalog.items", "course-1", {"i": -1})
    store.put("catalog.other", "x", {"i": 0})
    assert store.count("catalog.items") == 26
    keys = [k for k, _ in store.scan("catalog.items", prefix="sku-")]
    assert keys == [f"sku-{i:03d}" for i in range(25)]
    assert {k for k, _ in store.scan("catalog.items")} == set(keys) | {"course-1"}
    got = store.get_many("catalog.items", ["sku-001", "nope", "course-1"])
    assert set(got) == {"sku-001", "course-1"} and got["sku-001"].doc == {"i": 1}


def test_commit_is_all_or_nothing_with_version_checks(store: Store) -> None:
    store.put("plan.users", "a", {"role": "member"})
    ok = store.commit(Batch(puts=[("plan.users", "a", {"role": "agent"}),
                                  ("plan.users", "b", {"role": "member"})],
                            appends=[("plan.ledger", {"n": 1})],
                            incrs=[("plan.counts", "orders", 1)],
                            checks=[("plan.users", "a", 1), ("plan.users", "b", 0)]))
    assert ok is CommitResult.OK
    stale = store.commit(Batch(puts=[("plan.users", "a", {"role": "boss"})],
                               appends=[("plan.ledger", {"n": 2})],
                               checks=[("plan.users", "a", 1)]))
    assert stale is CommitResult.CONFLICT
    rec = store.get("plan.users", "a")
    assert rec is not None and rec.doc == {"role": "agent"} and rec.version == 2
    assert store.log_length("plan.ledger") == 1
    assert store.counters("plan.counts") == {"orders": 1}


def test_commit_once_marker_applies_exactly_once(store: Store) -> None:
    b = Batch(incrs=[("effects.n", "k", 1)], once="msg-1")
    assert store.commit(b) is CommitResult.OK
    assert store.commit(b) is CommitResult.DUPLICATE
    assert store.counters("effects.n") == {"k": 1}


def test_commit_refuses_two_families(store: Store) -> None:
    import pytest

    with pytest.raises(ValueError, match="one family"):
        store.commit(Batch(puts=[("a.x", "1", {}), ("b.x", "1", {})]))


def test_record_ttl(store: Store) -> None:
    store.put("tokens.wecom", "t", {"v": "x"}, ttl_s=1)
    assert store.get("tokens.wecom", "t") is not None
    time.sleep(1.2)
    assert store.get("tokens.wecom", "t") is None


def test_first_seen_dedup_and_ttl(store: Store) -> None:
    assert store.first_seen("wecom:msg:1", 60) is True
    assert store.first_seen("wecom:msg:1", 60) is False
    assert store.first_seen("wecom:msg:2", 1) is True
    time.sleep(1.2)
    assert store.first_seen("wecom:msg:2", 1) is True
    store.forget("wecom:msg:1")
    assert store.first_seen("wecom:msg:1", 60) is True


def test_queue_enqueue_claim_ack(store: Store) -> None:
    for i in range(5):
        assert store.enqueue("q1", {"n": i})
    assert store.queue_depth("q1") == 5
    items = store.claim("q1", consumer="c1", max_items=3, visibility_s=30)
    assert [i.payload["n"] for i in items] == [0, 1, 2]
    assert all(i.attempts == 1 for i in items)
    more = store.claim("q1", consumer="c2", max_items=10, visibility_s=30)
    assert [i.payload["n"] for i in more] == [3, 4]
    assert store.claim("q1", consumer="c3", max_items=10, visibility_s=30) == []
    store.ack("q1", [i.id for i in items + more])
    assert store.queue_depth("q1") == 0


def test_queue_dedup_is_atomic_with_enqueue(store: Store) -> None:
    assert store.enqueue("q2", {"m": "a"}, dedup_key="a", dedup_ttl_s=60) is True
    assert store.enqueue("q2", {"m": "a"}, dedup_key="a", dedup_ttl_s=60) is False
    assert store.queue_depth("q2") == 1


def test_queue_concurrent_duplicate_enqueues_keep_one(store: Store) -> None:
    results: list[bool] = []

    def go() -> None:
        results.append(store.enqueue("q3", {"m": "x"}, dedup_key="x", dedup_ttl_s=60))

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1 and store.queue_depth("q3") == 1


def test_queue_redelivers_after_visibility_timeout(store: Store) -> None:
    store.enqueue("q4", {"n": 1})
    first = store.claim("q4", consumer="dead", max_items=10, visibility_s=0.3)
    assert len(first) == 1
    assert store.claim("q4", consumer="live", max_items=10, visibility_s=0.3) == []
    time.sleep(0.45)
    # Every consumer of a queue uses the same visibility timeout (a setting).
    again = store.claim("q4", consumer="live", max_items=10, visibility_s=0.3)
    assert [i.payload for i in again] == [{"n": 1}] and again[0].attempts == 2


def test_queue_dead_letter_after_max_attempts(store: Store) -> None:
    store.enqueue("q5", {"n": "poison"})
    dead = False
    for _ in range(3):
        time.sleep(0.12)
        items = store.claim("q5", consumer="c", max_items=1, visibility_s=0.1)
        assert len(items) == 1
        dead = store.fail("q5", items[0], error="boom", max_attempts=3)
    assert dead is True
    assert store.queue_depth("q5") == 0
    letters = store.dead_letters("q5")
    assert len(letters) == 1 and letters[0]["payload"] == {"n": "poison"}
    assert letters[0]["error"] == "boom"


def test_logs_append_and_read(store: Store) -> None:
    assert store.append("audit.ledger", [{"a": 1}, {"a": 2}]) == 2
    assert store.append("audit.ledger", [{"a": 3}]) == 3
    assert store.read_log("audit.ledger") == [(1, {"a": 1}), (2, {"a": 2}), (3, {"a": 3})]
    assert store.read_log("audit.ledger", after=1, limit=1) == [(2, {"a": 2})]
    assert store.log_length("audit.ledger") == 3


def test_counters(store: Store) -> None:
    assert store.incr("stats.views", "sku-1") == 1
    assert store.incr("stats.views", "sku-1", 4) == 5
    store.incr("stats.views", "sku-2")
    assert store.counters("stats.views") == {"sku-1": 5, "sku-2": 1}


def test_lock_excludes_and_expires(store: Store) -> None:
    with store.lock("refresh", ttl_s=5, wait_s=0) as got:
        assert got is True
        with store.lock("refresh", ttl_s=5, wait_s=0.05) as other:
            assert other is False
    with store.lock("refresh", ttl_s=0.2, wait_s=0) as got2:
        assert got2 is True
    with store.lock("short", ttl_s=0.2, wait_s=0):
        time.sleep(0.3)
        with store.lock("short", ttl_s=1, wait_s=0) as stolen:
            assert stolen is True


def test_ping(store: Store) -> None:
    assert store.ping() is True
