"""One contract suite, run against SQLite and a real redis-server."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from store.base import Batch, CommitResult, Store
from tests.support import StoreClock

# Just past a 1 s TTL, the shortest the store takes: Redis (EX 1) really waits this long,
# SQLite only moves its clock.
PAST_1S = 1.05


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


def test_commit_once_all_is_all_or_nothing(store: Store) -> None:
    ok = Batch(incrs=[("effects.n", "a", 1), ("effects.n", "b", 1)], once_all=["m-a", "m-b"])
    assert store.commit(ok) is CommitResult.OK
    # One marker of the batch is set already: nothing applies, not even the new marker.
    overlap = Batch(incrs=[("effects.n", "b", 1), ("effects.n", "c", 1)],
                    once_all=["m-b", "m-c"])
    assert store.commit(overlap) is CommitResult.DUPLICATE
    assert store.counters("effects.n") == {"a": 1, "b": 1}
    assert store.seen_once("effects", ["m-a", "m-b", "m-c", "m-d"]) == {"m-a", "m-b"}
    # Leaving out what seen_once reports, the rest applies.
    rest = Batch(incrs=[("effects.n", "c", 1)], once_all=["m-c"])
    assert store.commit(rest) is CommitResult.OK
    assert store.counters("effects.n") == {"a": 1, "b": 1, "c": 1}
    assert store.seen_once("effects", ["m-c", "m-d"]) == {"m-c"}
    assert store.seen_once("effects", []) == set()


def test_commit_once_and_once_all_together(store: Store) -> None:
    both = Batch(incrs=[("effects.n", "k", 1)], once="item-1", once_all=["msg-1", "msg-1"])
    assert store.commit(both) is CommitResult.OK  # a marker named twice counts once
    assert store.seen_once("effects", ["item-1", "msg-1"]) == {"item-1", "msg-1"}
    assert store.commit(Batch(incrs=[("effects.n", "k", 1)], once="msg-1")) \
        is CommitResult.DUPLICATE
    assert store.commit(Batch(incrs=[("effects.n", "k", 1)], once="new",
                              once_all=["item-1"])) is CommitResult.DUPLICATE
    assert store.seen_once("effects", ["new"]) == set()
    assert store.counters("effects.n") == {"k": 1}


def test_commit_version_checks_come_before_once_markers(store: Store) -> None:
    store.put("profile.user", "u1", {"n": 1})
    stale = Batch(puts=[("profile.user", "u1", {"n": 2}), ("profile.group", "g1", {"n": 1})],
                  checks=[("profile.user", "u1", 1), ("profile.group", "g1", 1)],
                  once_all=["p-1", "p-2"])
    assert store.commit(stale) is CommitResult.CONFLICT
    assert store.seen_once("profile", ["p-1", "p-2"]) == set()  # no marker was set
    rec = store.get("profile.user", "u1")
    assert rec is not None and rec.doc == {"n": 1} and store.get("profile.group", "g1") is None
    # Every namespace of one family in one batch, each with its own check.
    fresh = Batch(puts=[("profile.user", "u1", {"n": 2}), ("profile.user", "u2", {"n": 1}),
                        ("profile.group", "g1", {"n": 1})],
                  checks=[("profile.user", "u1", 1), ("profile.user", "u2", 0),
                          ("profile.group", "g1", 0)],
                  once_all=["p-1", "p-2"])
    assert store.commit(fresh) is CommitResult.OK
    got = store.get_many("profile.user", ["u1", "u2"])
    assert {k: (r.doc, r.version) for k, r in got.items()} == {"u1": ({"n": 2}, 2),
                                                              "u2": ({"n": 1}, 1)}
    assert store.seen_once("profile", ["p-1", "p-2", "p-3"]) == {"p-1", "p-2"}


def test_once_all_markers_expire(store: Store, store_clock: StoreClock) -> None:
    b = Batch(incrs=[("effects.n", "k", 1)], once_all=["short-1", "short-2"], once_ttl_s=1)
    assert store.commit(b) is CommitResult.OK
    assert store.seen_once("effects", ["short-1", "short-2"]) == {"short-1", "short-2"}
    store_clock.advance(PAST_1S)
    assert store.seen_once("effects", ["short-1", "short-2"]) == set()
    assert store.commit(b) is CommitResult.OK
    assert store.counters("effects.n") == {"k": 2}


def test_concurrent_overlapping_batches_apply_each_marker_once(store: Store) -> None:
    """Threads commit overlapping batches of effects, each leaving out what seen_once
    reports and retrying on DUPLICATE: every effect lands exactly once."""
    ranges = [range(0, 60), range(20, 80), range(40, 100), range(0, 100, 3)]
    outcomes: list[CommitResult] = []

    def work(numbers: range) -> None:
        todo = [f"e{n}" for n in numbers]
        for start in range(0, len(todo), 16):
            pending = todo[start:start + 16]
            while pending:
                seen = store.seen_once("effects", pending)
                pending = [m for m in pending if m not in seen]
                if not pending:
                    break
                res = store.commit(Batch(incrs=[("effects.n", m, 1) for m in pending],
                                         once_all=pending))
                outcomes.append(res)
                if res is CommitResult.OK:
                    break

    threads = [threading.Thread(target=work, args=(r,)) for r in ranges]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert store.counters("effects.n") == {f"e{n}": 1 for n in range(100)}
    assert outcomes.count(CommitResult.OK) >= 7  # 100 markers, at most 16 a commit


def test_commit_refuses_two_families(store: Store) -> None:
    import pytest

    with pytest.raises(ValueError, match="one family"):
        store.commit(Batch(puts=[("a.x", "1", {}), ("b.x", "1", {})]))


def test_record_ttl(store: Store, store_clock: StoreClock) -> None:
    store.put("tokens.wecom", "t", {"v": "x"}, ttl_s=1)
    assert store.get("tokens.wecom", "t") is not None
    store_clock.advance(PAST_1S)
    assert store.get("tokens.wecom", "t") is None


def test_first_seen_dedup_and_ttl(store: Store, store_clock: StoreClock) -> None:
    assert store.first_seen("wecom:msg:1", 60) is True
    assert store.first_seen("wecom:msg:1", 60) is False
    assert store.first_seen("wecom:msg:2", 1) is True
    store_clock.advance(PAST_1S)
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


def test_queue_redelivers_after_visibility_timeout(store: Store,
                                                  store_clock: StoreClock) -> None:
    store.enqueue("q4", {"n": 1})
    first = store.claim("q4", consumer="dead", max_items=10, visibility_s=0.3)
    assert len(first) == 1
    assert store.claim("q4", consumer="live", max_items=10, visibility_s=0.3) == []
    store_clock.advance(0.35)
    # Every consumer of a queue uses the same visibility timeout (a setting).
    again = store.claim("q4", consumer="live", max_items=10, visibility_s=0.3)
    assert [i.payload for i in again] == [{"n": 1}] and again[0].attempts == 2


def test_queue_dead_letter_after_max_attempts(store: Store, store_clock: StoreClock) -> None:
    store.enqueue("q5", {"n": "poison"})
    dead = False
    for _ in range(3):
        store_clock.advance(0.12)
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


def test_lock_excludes_and_expires(store: Store, store_clock: StoreClock) -> None:
    with store.lock("refresh", ttl_s=5, wait_s=0) as got:
        assert got is True
        with store.lock("refresh", ttl_s=5, wait_s=0.05) as other:
            assert other is False
    with store.lock("refresh", ttl_s=0.2, wait_s=0) as got2:
        assert got2 is True
    with store.lock("short", ttl_s=0.2, wait_s=0):
        store_clock.advance(0.25)
        with store.lock("short", ttl_s=1, wait_s=0) as stolen:
            assert stolen is True


def test_ping(store: Store) -> None:
    assert store.ping() is True


def test_enqueue_many_queues_in_order(store: Store) -> None:
    assert store.enqueue("qm1", {"n": 0})
    assert store.enqueue_many("qm1", [({"n": 1}, None), ({"n": 2}, None), ({"n": 3}, None)]) \
        == [True, True, True]
    assert store.enqueue("qm1", {"n": 4})
    assert store.enqueue_many("qm1", [({"n": 5}, None)]) == [True]
    assert store.queue_depth("qm1") == 6
    items = store.claim("qm1", consumer="c", max_items=4, visibility_s=30)
    items += store.claim("qm1", consumer="c", max_items=10, visibility_s=30)
    assert [i.payload for i in items] == [{"n": n} for n in range(6)]
    assert all(i.attempts == 1 for i in items)
    store.ack("qm1", [i.id for i in items])
    assert store.queue_depth("qm1") == 0


def test_enqueue_many_stores_what_enqueue_stores(store: Store) -> None:
    doc = {"kind": "platform", "fields": {"Content": "你好", "n": [1, 2.5, None, True]}}
    assert store.enqueue("qm2", doc, dedup_key="one", dedup_ttl_s=60)
    assert store.enqueue_many("qm2", [(doc, "two")], dedup_ttl_s=60) == [True]
    a, b = store.claim("qm2", consumer="c", max_items=10, visibility_s=30)
    assert a.payload == b.payload == doc and a.attempts == b.attempts == 1


def test_enqueue_many_dedups_each_item(store: Store) -> None:
    assert store.enqueue("qm3", {"m": "a"}, dedup_key="a", dedup_ttl_s=60)
    got = store.enqueue_many("qm3", [
        ({"m": "a2"}, "a"),  # seen by enqueue
        ({"m": "b"}, "b"),
        ({"m": "b2"}, "b"),  # earlier in this call
        ({"m": "free1"}, None),
        ({"m": "c"}, "c"),
        ({"m": "free1"}, None),  # no key: never a repeat
    ], dedup_ttl_s=60)
    assert got == [False, True, False, True, True, True]
    # One key namespace for both calls, per queue.
    assert store.enqueue("qm3", {"m": "c2"}, dedup_key="c", dedup_ttl_s=60) is False
    assert store.enqueue_many("qm3", [({"m": "b3"}, "b"), ({"m": "d"}, "d")],
                              dedup_ttl_s=60) == [False, True]
    assert store.enqueue_many("other", [({"m": "a"}, "a")], dedup_ttl_s=60) == [True]
    items = store.claim("qm3", consumer="c", max_items=20, visibility_s=30)
    assert [i.payload["m"] for i in items] == ["a", "b", "free1", "c", "free1", "d"]


def test_enqueue_many_dedup_keys_expire(store: Store, store_clock: StoreClock) -> None:
    assert store.enqueue_many("qm4", [({"n": 1}, "k")], dedup_ttl_s=1) == [True]
    assert store.enqueue("qm4", {"n": 2}, dedup_key="k", dedup_ttl_s=1) is False
    store_clock.advance(PAST_1S)
    assert store.enqueue_many("qm4", [({"n": 3}, "k"), ({"n": 4}, "k")], dedup_ttl_s=1) \
        == [True, False]
    assert store.queue_depth("qm4") == 2


def test_enqueue_many_empty_and_bad_ttl_write_nothing(store: Store) -> None:
    assert store.enqueue_many("qm5", []) == []
    with pytest.raises(ValueError, match="dedup_ttl_s"):
        store.enqueue_many("qm5", [({"n": 1}, None), ({"n": 2}, "k")])
    assert store.queue_depth("qm5") == 0
    assert store.enqueue_many("qm5", [({"n": 3}, "k")], dedup_ttl_s=60) == [True]


def test_enqueue_many_concurrent_overlapping_keys_keep_one_each(store: Store) -> None:
    """Threads queue overlapping keys, in batches and one by one: each key lands once."""
    ranges = [range(0, 120), range(40, 160), range(80, 200), range(0, 200, 3)]
    results: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def many(numbers: range) -> None:
        keys = [f"k{n}" for n in numbers]
        for start in range(0, len(keys), 16):
            chunk = keys[start:start + 16]
            got = store.enqueue_many("qm6", [({"k": k}, k) for k in chunk], dedup_ttl_s=60)
            with lock:
                results.extend(zip(chunk, got, strict=True))

    def single(numbers: range) -> None:
        for n in numbers:
            ok = store.enqueue("qm6", {"k": f"k{n}"}, dedup_key=f"k{n}", dedup_ttl_s=60)
            with lock:
                results.append((f"k{n}", ok))

    threads = [threading.Thread(target=many, args=(r,)) for r in ranges]
    threads.append(threading.Thread(target=single, args=(range(100, 140),)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    wins = [k for k, ok in results if ok]
    assert sorted(wins) == sorted(f"k{n}" for n in range(200))
    assert store.queue_depth("qm6") == 200
    items = store.claim("qm6", consumer="c", max_items=500, visibility_s=30)
    assert sorted(i.payload["k"] for i in items) == sorted(wins)


def test_enqueue_many_is_one_write(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the call: one SQLite transaction, or one Redis script, per batch."""
    from store.redis import RedisStore
    from store.sqlite import SQLiteStore

    items = [({"n": n}, f"k{n}" if n % 2 else None) for n in range(20)]
    store.enqueue_many("qm7", [({"n": -1}, "warm")], dedup_ttl_s=60)  # loads the script
    if isinstance(store, SQLiteStore):
        sql: list[str] = []
        store._conn().set_trace_callback(sql.append)
        assert store.enqueue_many("qm7", items, dedup_ttl_s=60) == [True] * 20
        store._conn().set_trace_callback(None)
        assert [s for s in sql if s.startswith(("BEGIN", "COMMIT"))] \
            == ["BEGIN IMMEDIATE", "COMMIT"]
    else:
        assert isinstance(store, RedisStore)
        sent: list[object] = []
        send = store.r.execute_command

        def counted(*args: Any, **kwargs: Any) -> Any:
            sent.append(args[0])
            return send(*args, **kwargs)

        monkeypatch.setattr(store.r, "execute_command", counted)
        assert store.enqueue_many("qm7", items, dedup_ttl_s=60) == [True] * 20
        monkeypatch.undo()
        assert sent == ["EVALSHA"]
    assert store.queue_depth("qm7") == 21


def test_point5_trim_log_keeps_sequence_numbers(store: Store) -> None:
    store.append("catalog.changes", [{"n": i} for i in range(1, 11)])
    assert store.trim_log("catalog.changes", upto=4) == 4
    assert store.log_length("catalog.changes") == 10  # still every entry ever appended
    assert store.read_log("catalog.changes", after=0, limit=2) == [(5, {"n": 5}), (6, {"n": 6})]
    assert store.read_log("catalog.changes", after=7) == [(8, {"n": 8}), (9, {"n": 9}),
                                                         (10, {"n": 10})]
    assert store.trim_log("catalog.changes", upto=2) == 0  # already gone
    # The newest entry always stays, so numbering never restarts.
    assert store.trim_log("catalog.changes", upto=100) == 5
    assert store.read_log("catalog.changes") == [(10, {"n": 10})]
    assert store.append("catalog.changes", [{"n": 11}]) == 11
    store.commit(Batch(appends=[("catalog.changes", {"n": 12})]))
    assert store.read_log("catalog.changes", after=10) == [(11, {"n": 11}), (12, {"n": 12})]
    assert store.log_length("catalog.changes") == 12
    assert store.trim_log("nothing.here", upto=5) == 0


def test_point2_replace_log_entries_overwrites_kept_entries_only(store: Store) -> None:
    store.append("bot.replies", [{"u": "a"}, {"u": "b"}, {"u": "c"}, {"u": "d"}])
    store.trim_log("bot.replies", upto=1)
    assert store.replace_log_entries("bot.replies", {1: {"x": 1}, 3: {"erased": True},
                                                     9: {"x": 9}}) == 1
    assert store.read_log("bot.replies") == [(2, {"u": "b"}), (3, {"erased": True}),
                                             (4, {"u": "d"})]
    assert store.replace_log_entries("bot.replies", {}) == 0


def test_point2_delete_queued_removes_waiting_claimed_and_dead_items(store: Store) -> None:
    for i in range(5):
        store.enqueue("inbox", {"user_id": "u-gone" if i % 2 == 0 else "u-stays", "n": i})
    claimed = store.claim("inbox", consumer="c", max_items=1, visibility_s=30)
    assert claimed[0].payload["n"] == 0  # u-gone's, held by a worker
    poison = store.claim("inbox", consumer="c", max_items=2, visibility_s=30)
    for item in poison:  # n=1 (u-stays) and n=2 (u-gone) are dead-lettered
        assert store.fail("inbox", item, error="boom", max_attempts=1)
    assert store.delete_queued("inbox", match=lambda p: p.get("user_id") == "u-gone") == 3
    assert [d["payload"]["n"] for d in store.dead_letters("inbox")] == [1]
    left = store.claim("inbox", consumer="c2", max_items=10, visibility_s=30)
    assert [i.payload["n"] for i in left] == [3]
    store.ack("inbox", [claimed[0].id, *[i.id for i in left]])  # acking a deleted id is fine
    assert store.queue_depth("inbox") == 0
    assert store.delete_queued("inbox", match=lambda p: True) == 1  # the dead letter
    assert store.dead_letters("inbox") == []


def test_point5_purge_expired_drops_expired_records(store: Store,
                                                    store_clock: StoreClock) -> None:
    store.put("tokens.wecom", "short", {"v": 1}, ttl_s=1)
    store.put("tokens.wecom", "kept", {"v": 2})
    store.first_seen("dedup:1", 1)
    store_clock.advance(PAST_1S)
    store.purge_expired()
    assert store.count("tokens.wecom") == 1
    assert [k for k, _ in store.scan("tokens.wecom")] == ["kept"]
    assert store.first_seen("dedup:1", 60) is True
    assert store.purge_expired() == 0  # nothing more to do


def test_point5_purge_expired_clears_more_than_a_page(store: Store,
                                                      store_clock: StoreClock) -> None:
    # 2,500 expired records span three pages of the Redis index: removing one page's worth
    # must not make the next page skip the entries that shifted down.
    for i in range(2_500):
        store.put("tokens.wecom", f"t{i:05d}", {"v": i}, ttl_s=1)
    store.put("tokens.wecom", "kept", {"v": -1})
    store_clock.advance(PAST_1S)
    assert store.purge_expired() >= 2_500
    assert store.count("tokens.wecom") == 1
