"""Store contract, issue 18: the console retries and drops dead letters and pages through
records (both back-ends)."""

from __future__ import annotations

from store.base import Store
from tests.support import StoreClock


def _poison(store: Store, clock: StoreClock, queue: str, n: int) -> None:
    for i in range(n):
        store.enqueue(queue, {"n": i})
    for _ in range(2):  # two deliveries each, then dead
        clock.advance(0.12)
        for item in store.claim(queue, consumer="c", max_items=n, visibility_s=0.1):
            store.fail(queue, item, error=f"boom {item.payload['n']}", max_attempts=2)


def test_retry_dead_queues_the_item_again_once(store: Store, store_clock: StoreClock) -> None:
    _poison(store, store_clock, "q18", 2)
    letters = store.dead_letters("q18")
    assert [d["payload"]["n"] for d in letters] == [0, 1] and store.queue_depth("q18") == 0
    first = str(letters[0]["id"])
    assert store.retry_dead("q18", [first]) == 1
    assert store.retry_dead("q18", [first]) == 0  # a second click queues nothing more
    assert store.retry_dead("q18", ["no-such-id"]) == 0
    assert [d["payload"]["n"] for d in store.dead_letters("q18")] == [1]
    assert store.queue_depth("q18") == 1
    store_clock.advance(0.12)
    again = store.claim("q18", consumer="c", max_items=10, visibility_s=0.1)
    assert [i.payload for i in again] == [{"n": 0}] and again[0].attempts == 1


def test_drop_dead_deletes_only_the_named_letters(store: Store, store_clock: StoreClock) -> None:
    _poison(store, store_clock, "q18d", 3)
    ids = [str(d["id"]) for d in store.dead_letters("q18d")]
    assert store.drop_dead("q18d", [ids[0], ids[2]]) == 2
    assert store.drop_dead("q18d", [ids[0]]) == 0
    assert [d["payload"]["n"] for d in store.dead_letters("q18d")] == [1]
    assert store.queue_depth("q18d") == 0


def test_scan_page_pages_by_key(store: Store) -> None:
    for k in ["b", "a", "d", "c", "e"]:
        store.put("console.page", k, {"k": k})
    store.put("console.pagex", "a0", {"k": "other namespace"})
    first = store.scan_page("console.page", limit=2)
    assert [k for k, _ in first] == ["a", "b"] and first[0][1].doc == {"k": "a"}
    second = store.scan_page("console.page", after=first[-1][0], limit=2)
    assert [k for k, _ in second] == ["c", "d"]
    assert [k for k, _ in store.scan_page("console.page", after="d", limit=10)] == ["e"]
    assert store.scan_page("console.page", after="e", limit=10) == []
