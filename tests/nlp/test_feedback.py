"""Learning from what people do (issue 15 point 7): popularity decays, each view, click and
order counts once, a refunded order is taken back whatever the arrival order, signals move a
person's profile without counting as messages, and consumables come back after their
repurchase interval."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from catalog.repo import CatalogRepo
from models.catalog import CatalogItem
from models.messages import ChatMessage
from nlp.embed import HashEmbedder
from nlp.feedback import Feedback, OrderSignal
from nlp.profile import ProfileRepo
from nlp.signals import NS_BOUGHT, POP_HALF_LIFE_DAYS, Signals, still_excluded
from nlp.tagging import TagHit, TagResult
from store.base import Store
from tests.nlp.feedback_worker import ITEMS, ORDERS

T0 = 1_764_000_000
DAY = 86_400
EPOCH = int(POP_HALF_LIFE_DAYS * DAY * 8)
ROOT = Path(__file__).resolve().parents[2]


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _item(item_id: str, tags: list[str], *, repurchase_days: int | None = None) -> CatalogItem:
    return CatalogItem.model_validate({
        "id": item_id, "kind": "product", "title": f"商品 {item_id}", "tags": tags,
        "price_cents": 1000, "url": f"https://mall.example.com/p/{item_id}",
        "repurchase_days": repurchase_days})


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def catalog(store: Store) -> CatalogRepo:
    repo = CatalogRepo(store, embedder=HashEmbedder())
    repo.upsert([_item("diapers", ["纸尿裤"], repurchase_days=30),
                 _item("stroller", ["遛娃", "出行"]),
                 _item("cereal", ["辅食添加", "补铁", "米粉", "有机"])])
    return repo


@pytest.fixture
def signals(store: Store, clock: Clock, catalog: CatalogRepo) -> Signals:
    return Signals(store, ttl_s=0.0, clock=clock, repurchase_days=lambda ids: {
        i: it.repurchase_days for i, it in catalog.get_items(ids).items() if it.repurchase_days})


@pytest.fixture
def profiles(store: Store, clock: Clock) -> ProfileRepo:
    return ProfileRepo(store, half_life_days=30, clock=clock)


@pytest.fixture
def feedback(store: Store, profiles: ProfileRepo, signals: Signals,
             catalog: CatalogRepo) -> Feedback:
    return Feedback(store, profiles=profiles, signals=signals, items=catalog)


def _weights(profiles: ProfileRepo, user: str, now: float) -> dict[str, float]:
    p = profiles.get("user", user, now=now)
    return {} if p is None else {t.tag: round(t.weight, 3) for t in p.tags}


def test_point7_popularity_decays_with_time(signals: Signals, clock: Clock) -> None:
    # Ten taps 90 days ago (three half-lives: 30 × 1/8 = 3.75) against two today (6).
    for _ in range(10):
        signals.record("click", ["old-hit"], provider_id="sh-01", ts=T0 - 90 * DAY)
    signals.record("click", ["new-hit"], provider_id="sh-01", ts=T0)
    signals.record("click", ["new-hit"], provider_id="sh-01", ts=T0)
    signals.record("order", ["elsewhere"], provider_id="bj-01", ts=T0)
    ranked = signals.popular("sh-01")
    assert [i for i, _ in ranked] == ["new-hit", "old-hit"]
    # Counters are integers (1000 per unit of weight at the epoch start): rounding.
    assert ranked[1][1] / ranked[0][1] == pytest.approx(3.75 / 6, rel=2e-3)
    assert [i for i, _ in signals.popular("bj-01")] == ["elsewhere"]
    assert {i for i, _ in signals.popular()} == {"new-hit", "old-hit", "elsewhere"}
    assert signals.events("old-hit") == {"view": 0, "click": 10, "order": 0}


def test_point7_decay_is_the_same_across_an_epoch(signals: Signals, clock: Clock) -> None:
    """Counters start over every 8 half-lives; what was counted in the last epoch still
    ranks by its decayed weight in the next one."""
    start = (T0 // EPOCH + 1) * EPOCH  # the next epoch's first second
    clock.now = start - 10
    signals.record("order", ["before"], ts=start - 10)  # 10, counted in the old epoch
    clock.now = start + 30 * DAY
    signals.record("view", ["after"], ts=start + 30 * DAY)  # 1, now
    signals.record("click", ["after"], ts=start + 30 * DAY)  # + 3
    ranked = dict(signals.popular())
    # "before" is one half-life old: 10 / 2 = 5 against "after"'s 4.
    assert ranked["before"] / ranked["after"] == pytest.approx(5 / 4, rel=1e-3)


def test_point7_a_keyed_event_counts_once(feedback: Feedback, signals: Signals,
                                          profiles: ProfileRepo) -> None:
    for _ in range(3):
        feedback.record(action="click", key="tap-1", item_id="stroller", user_id="mall-1",
                        provider_id="sh-01", ts=T0)
    assert signals.events("stroller")["click"] == 1
    assert _weights(profiles, "mall-1", T0) == {"遛娃": 0.3, "出行": 0.3}
    p = profiles.get("user", "mall-1", now=T0)
    # A signal is no message: it moves weights, not the message count or the evidence.
    assert p is not None and p.message_count == 0 and p.tag_counts == {}
    assert feedback.record(action="view", key="view-1", item_id="stroller", user_id=None,
                           provider_id=None, ts=T0)
    assert profiles.get("user", "v:anonymous") is None


def test_point7_order_counts_once_and_a_refund_takes_it_back(
        feedback: Feedback, signals: Signals, profiles: ProfileRepo) -> None:
    paid = OrderSignal(order_id="o-1", user_id="mall-1", item_ids=("cereal",),
                       provider_id="sh-01", ts=T0, refunded=False)
    for _ in range(2):  # paid, then completed (or a replay): one order
        feedback.learn_order(paid)
    assert signals.events("cereal")["order"] == 1
    assert signals.bought("mall-1") == {"cereal"}
    # The item's first three tags, at the weight of a purchase.
    assert _weights(profiles, "mall-1", T0) == {"辅食添加": 1.0, "补铁": 1.0, "米粉": 1.0}
    refund = OrderSignal(order_id="o-1", user_id="mall-1", item_ids=("cereal",),
                         provider_id="sh-01", ts=T0 + DAY, refunded=True)
    for _ in range(2):
        feedback.learn_order(refund)
    assert signals.events("cereal")["order"] == 0
    assert signals.popular("sh-01") == []
    assert signals.bought("mall-1") == frozenset()
    assert _weights(profiles, "mall-1", T0) == {}


def test_point7_a_refund_before_the_payment_counts_nothing(
        feedback: Feedback, signals: Signals, profiles: ProfileRepo) -> None:
    feedback.learn_order(OrderSignal(order_id="o-2", user_id="mall-1", item_ids=("cereal",),
                                     provider_id=None, ts=T0, refunded=True))
    feedback.learn_order(OrderSignal(order_id="o-2", user_id="mall-1", item_ids=("cereal",),
                                     provider_id=None, ts=T0, refunded=False))
    assert signals.events("cereal")["order"] == 0
    assert signals.bought("mall-1") == frozenset()
    assert profiles.get("user", "mall-1") is None


def test_point7_consumables_come_back_after_their_interval(
        feedback: Feedback, signals: Signals, clock: Clock) -> None:
    feedback.learn_order(OrderSignal(order_id="o-3", user_id="mall-1",
                                     item_ids=("diapers", "stroller"), provider_id=None,
                                     ts=T0, refunded=False))
    assert signals.bought("mall-1") == {"diapers", "stroller"}
    clock.now = T0 + 29 * DAY
    assert signals.bought("mall-1") == {"diapers", "stroller"}
    clock.now = T0 + 30 * DAY
    assert signals.bought("mall-1") == {"stroller"}  # diapers again; a stroller never
    # Bought again: out for another 30 days from the new purchase.
    signals.record_purchases("mall-1", ["diapers"], ts=int(clock.now))
    assert signals.bought("mall-1") == {"diapers", "stroller"}
    assert still_excluded({"items": {"x": 1}, "again": {"x": 5}}, now=5) == frozenset()


def test_point7_signals_and_messages_fold_into_one_profile(
        feedback: Feedback, profiles: ProfileRepo) -> None:
    profiles.apply(msg=ChatMessage(msg_id="m1", user_id="mall-1", text="", ts=T0),
                   result=TagResult(tags=[TagHit("辅食添加", 0.5)], vector=None,
                                    contentless=False))
    feedback.learn_order(OrderSignal(order_id="o-4", user_id="mall-1", item_ids=("cereal",),
                                     provider_id=None, ts=T0, refunded=False))
    p = profiles.get("user", "mall-1", now=T0)
    assert p is not None and p.message_count == 1 and p.tag_counts == {"辅食添加": 1}
    assert p.tags[0].tag == "辅食添加" and round(p.tags[0].weight, 3) == 1.5


@pytest.mark.redis
def test_point7_processes_racing_on_the_same_orders_count_each_once(
        backend: str, store: Store, catalog: CatalogRepo, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    """Four processes feed the same 50 events (40 paid orders, 10 full refunds) in four
    different orders: every order that was not refunded counts once, in popularity, in
    purchases and in the profile; every refunded one counts nothing."""
    target = (request.getfixturevalue("clean_redis_url") if backend == "redis"
              else str(tmp_path / "store.db"))
    start_at = str(time.time() + 1.5)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests/nlp/feedback_worker.py"),
                               backend, target, str(seed), start_at], cwd=ROOT, env=env)
             for seed in range(4)]
    for p in procs:
        p.wait(timeout=180)
        assert p.returncode == 0
    kept = Counter(ITEMS[i % 3] for i in range(ORDERS) if i % 4)
    signals = Signals(store, ttl_s=0.0, clock=lambda: T0)
    assert {i: signals.events(i)["order"] for i in ITEMS} == dict(kept)
    rec = store.get(NS_BOUGHT, "mall-1")
    assert rec is not None and rec.doc["n"] == dict(kept)
    # The orders' tags at a purchase's weight each (catalog tags: see the fixture).
    profiles = ProfileRepo(store, half_life_days=30)
    want = {"纸尿裤": kept["diapers"], "遛娃": kept["stroller"], "出行": kept["stroller"],
            "辅食添加": kept["cereal"], "补铁": kept["cereal"], "米粉": kept["cereal"]}
    assert _weights(profiles, "mall-1", T0) == {k: float(v) for k, v in want.items()}
