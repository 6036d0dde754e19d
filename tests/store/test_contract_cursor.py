"""enqueue_with_cursor / get_cursor: items and a cursor in one commit, on both back-ends
(issue 14 point 4: the archive's seq is saved only with the messages it covers)."""

from __future__ import annotations

import pytest

from store.base import Store


def _drain(store: Store, queue: str) -> list[dict[str, object]]:
    got = store.claim(queue, consumer="c", max_items=100, visibility_s=30)
    store.ack(queue, [i.id for i in got])
    return [i.payload for i in got]


def test_point4_cursor_moves_with_the_items(store: Store) -> None:
    assert store.get_cursor("inbox", "archive:corp") is None
    out = store.enqueue_with_cursor(
        "inbox", [({"n": 1}, "a"), ({"n": 2}, "b"), ({"n": 3}, None)],
        cursor="archive:corp", doc={"seq": 3, "media": 1}, dedup_ttl_s=60)
    assert out == [True, True, True]
    assert store.get_cursor("inbox", "archive:corp") == {"seq": 3, "media": 1}
    assert [p["n"] for p in _drain(store, "inbox")] == [1, 2, 3]


def test_point4_repeats_are_skipped_and_the_cursor_still_moves(store: Store) -> None:
    store.enqueue_many("inbox", [({"n": 0}, "a")], dedup_ttl_s=60)
    out = store.enqueue_with_cursor(
        "inbox", [({"n": 1}, "a"), ({"n": 2}, "b"), ({"n": 3}, "b")],
        cursor="c1", doc={"seq": 9}, dedup_ttl_s=60)
    assert out == [False, True, False]
    assert store.get_cursor("inbox", "c1") == {"seq": 9}
    # The same dedup keys as enqueue and enqueue_many: one key space.
    assert store.enqueue("inbox", {"n": 4}, dedup_key="b", dedup_ttl_s=60) is False
    assert [p["n"] for p in _drain(store, "inbox")] == [0, 2]


def test_point4_empty_items_move_the_cursor_alone(store: Store) -> None:
    assert store.enqueue_with_cursor("inbox", [], cursor="c", doc={"seq": 5}) == []
    assert store.get_cursor("inbox", "c") == {"seq": 5}
    assert store.enqueue_with_cursor("inbox", [], cursor="c", doc={"seq": 7}) == []
    assert store.get_cursor("inbox", "c") == {"seq": 7}
    assert store.queue_depth("inbox") == 0


def test_point4_cursors_are_per_queue_and_name(store: Store) -> None:
    store.enqueue_with_cursor("inbox", [], cursor="a", doc={"seq": 1})
    store.enqueue_with_cursor("inbox", [], cursor="b", doc={"seq": 2})
    store.enqueue_with_cursor("other", [], cursor="a", doc={"seq": 3})
    assert store.get_cursor("inbox", "a") == {"seq": 1}
    assert store.get_cursor("inbox", "b") == {"seq": 2}
    assert store.get_cursor("other", "a") == {"seq": 3}


def test_point4_a_dedup_key_needs_a_ttl_and_nothing_is_written(store: Store) -> None:
    with pytest.raises(ValueError, match="dedup_ttl_s"):
        store.enqueue_with_cursor("inbox", [({"n": 1}, "k")], cursor="c", doc={"seq": 1})
    assert store.get_cursor("inbox", "c") is None
    assert store.queue_depth("inbox") == 0
