"""Issue 15 point 3: tags back into WeCom, against the WeCom stand-in (bot/standin.py).

Real parts: the services as `mingpian worker` builds them (store, profiles, identity links,
erasure tombstones, the shared WeCom token), real HTTP to the stand-in, which keeps the corp's
tag groups and each follow user's tags and answers WeCom's error codes. Only time is moved
by hand in the rate-limit test (the stand-in and the budget read the same clock).
"""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from app.cli import build_parser
from app.erasure import erase_user
from app.services import Services, build_services
from app.settings import Settings
from app.tag_job import start_tag_sync
from bot.tags import NS_STATE, NotConfiguredError, TagSync, TagSyncConfig, run_tag_sync
from models.messages import ChatMessage
from nlp.tagging import TagHit, TagResult
from tests.bot.fake_wecom import FakeWeCom
from tests.bot.support import wecom_app_config
from tests.conftest import make_settings

GROUP = "mingpian 兴趣"
LIST, ADD, MARK, GET = ("/cgi-bin/externalcontact/get_corp_tag_list",
                        "/cgi-bin/externalcontact/add_corp_tag",
                        "/cgi-bin/externalcontact/mark_tag", "/cgi-bin/externalcontact/get")
_ids = itertools.count(1)


class FakeTime:
    """A clock that moves only when someone sleeps (shared by the budget and the stand-in)."""

    def __init__(self) -> None:
        self.t = 1_764_000_000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def _settings(tmp_path: Path, fake: FakeWeCom, **tags: object) -> Settings:
    return make_settings(tmp_path / "data", wecom=wecom_app_config(fake), embedder="hash",
                         embedded_worker=False, tags={"min_interval_s": 0, **tags})


@pytest.fixture
def services(tmp_path: Path, fake: FakeWeCom) -> Iterator[Services]:
    svc = build_services(_settings(tmp_path, fake))
    yield svc
    svc.close()


def talk(services: Services, user: str, tags: dict[str, float]) -> None:
    """Fold one message showing these tags into the user's profile."""
    msg = ChatMessage(msg_id=f"m{next(_ids)}", user_id=user, ts=int(time.time()), text="…")
    services.profiles.apply(msg=msg, result=TagResult(
        tags=[TagHit(t, c) for t, c in tags.items()], vector=None, contentless=False))


def agree(services: Services, user: str, *, yes: bool = True) -> None:
    services.customers.consent.record(user, agree=yes, at=time.time())


def writes(fake: FakeWeCom) -> list[str]:
    return [r.path for r in fake.sent() if r.path in (ADD, MARK)]


def test_point3_tags_follow_interests_only_with_consent_and_converge(
        services: Services, fake: FakeWeCom) -> None:
    c = fake.contacts
    c.add_contact("wmA", follow="lifang", createtime=100)
    c.add_contact("wmA", follow="zhaolei", createtime=200)  # a second salesperson, later
    c.add_contact("wmB", follow="lifang")
    c.add_contact("wmC", follow="lifang")
    long_tag = "宝宝辅食添加与过敏食物引入顺序以及每日营养搭配建议合集"  # > 30 characters
    talk(services, "wmA", {"辅食添加": 0.9, "睡眠": 0.8, long_tag: 0.7, "出牙": 0.1})
    talk(services, "wmC", {"防晒": 0.9})  # no consent: never written
    agree(services, "wmA")
    agree(services, "wmB")  # consent, but nothing learned yet
    sync = services.customers.tags

    dry = sync.sync_all(dry_run=True)
    assert writes(fake) == [] and services.store.count(NS_STATE) == 0
    assert [(ch.external_userid, ch.userid) for ch in dry.changes] == [("wmA", "lifang")]
    assert set(dry.changes[0].add) == {"辅食添加", "睡眠", long_tag[:30]}
    assert not [r for r in fake.sent() if r.path == GET and r.query.get(
        "external_userid") == "wmC"]  # nothing to write for C: WeCom is not even asked

    report = sync.sync_all(dry_run=False)
    assert report.changed == 1 and not report.errors
    assert c.tags_of("wmA", "lifang") == {"辅食添加", "睡眠", long_tag[:30]}
    assert c.tags_of("wmA", "zhaolei") == set()  # the follow-up salesperson only
    assert c.tags_of("wmC", "lifang") == set() and c.tags_of("wmB", "lifang") == set()
    assert [g["group_name"] for g in c.groups.values()] == [GROUP]
    assert all(len(t["name"]) <= 30 for g in c.groups.values() for t in g["tags"].values())

    before = len(writes(fake))
    again = sync.sync_all(dry_run=False)
    assert again.changed == 0 and again.unchanged == 1 and len(writes(fake)) == before


def test_point3_changes_no_more_often_than_the_setting(tmp_path: Path, fake: FakeWeCom) -> None:
    fake.contacts.add_contact("wmA", follow="lifang")
    svc = build_services(_settings(tmp_path, fake, min_interval_s=3600))
    try:
        talk(svc, "wmA", {"辅食添加": 0.9})
        agree(svc, "wmA")
        assert svc.customers.tags.sync_all().changed == 1
        for _ in range(5):
            talk(svc, "wmA", {"睡眠": 0.95})
        held = svc.customers.tags.sync_all()
        assert held.skipped_recent == 1 and held.changed == 0
        assert fake.contacts.tags_of("wmA", "lifang") == {"辅食添加"}
        state = svc.store.get(NS_STATE, "wmA")
        assert state is not None
        svc.store.put(NS_STATE, "wmA", {**state.doc, "at": 0})  # the interval has passed
        moved = svc.customers.tags.sync_all()
        assert moved.changed == 1
        assert "睡眠" in fake.contacts.tags_of("wmA", "lifang")
    finally:
        svc.close()


def test_point3_consent_withdrawn_and_erasure_remove_every_tag(
        tmp_path: Path, fake: FakeWeCom) -> None:
    for ext in ("wmA", "wmB"):
        fake.contacts.add_contact(ext, follow="lifang")
    svc = build_services(_settings(tmp_path, fake, min_interval_s=86_400))
    try:
        for ext in ("wmA", "wmB"):
            talk(svc, ext, {"辅食添加": 0.9, "睡眠": 0.9})
            agree(svc, ext)
        assert svc.customers.tags.sync_all().changed == 2
        agree(svc, "wmA", yes=False)  # withdrawn
        erase_user(svc, "wmB")  # what DELETE /v1/users/wmB runs
        assert not svc.customers.consent.has_consent("wmB")
        # Removing everything is not held back by the per-contact interval.
        report = svc.customers.tags.sync_all()
        assert {(ch.external_userid, ch.reason) for ch in report.changes} == {
            ("wmA", "no consent"), ("wmB", "erased")}
        assert fake.contacts.tags_of("wmA", "lifang") == set()
        assert fake.contacts.tags_of("wmB", "lifang") == set()
        assert svc.store.count(NS_STATE) == 0  # nothing kept about them any more
        before = len(fake.requests)
        assert svc.customers.tags.sync_all().changed == 0
        assert len(fake.requests) == before  # and nobody is asked about them again
    finally:
        svc.close()


def test_point3_stale_token_deleted_tag_gone_contact_and_rate_answer(
        services: Services, fake: FakeWeCom) -> None:
    c = fake.contacts
    for ext in ("wmA", "wmB", "wmGone"):
        c.add_contact(ext, follow="lifang")
        talk(services, ext, {"辅食添加": 0.9})
        agree(services, ext)
    clock = FakeTime()
    sync = timed(services, clock)
    assert services.bot.wecom_client is not None
    services.bot.wecom_client.tokens.get()  # the token every process shares
    calls = fake.token_calls
    c.fail_next(MARK, 42001)  # the shared token expired: refreshed once, retried once
    assert sync.sync_contacts(["wmA"], dry_run=False).changed == 1
    assert fake.token_calls == calls + 1
    # Our tag was deleted in the admin console just before the mark (40068): the group is
    # read again and the mark retried. And one "too many calls" answer (45009): wait for
    # the next minute, retry.
    c.fail_next(MARK, 40068)
    c.fail_next(GET, 45009)
    t0 = clock()
    report = sync.sync_contacts(["wmB"], dry_run=False)
    assert report.changed == 1 and not report.errors
    assert c.tags_of("wmB", "lifang") == {"辅食添加"}
    assert clock() > t0  # it waited
    # Deleted for real: the tag is made again.
    for g in c.groups.values():
        g["tags"].clear()
    report = timed(services, clock).sync_contacts(["wmB"], dry_run=False)
    assert report.created_tags == ["辅食添加"] and c.tags_of("wmB", "lifang") == {"辅食添加"}
    # A contact who left (40096) is dropped without an error.
    del c.contacts["wmGone"]
    report = sync.sync_contacts(["wmGone"], dry_run=False)
    assert not report.errors and report.changed == 0
    # Any other refusal is reported per contact, and the run goes on.
    c.fail_next(MARK, 60020)
    talk(services, "wmA", {"睡眠": 3.0})
    report = sync.sync_contacts(["wmA", "wmB"], dry_run=False)
    assert [who for who, _ in report.errors] == ["wmA"] and "60020" in report.errors[0][1]


def timed(services: Services, clock: FakeTime, *, calls_per_minute: int = 3000,
          batch: int = 100) -> TagSync:
    """The wired tag sync's parts, on a hand-moved clock."""
    wired = services.customers.tags
    return TagSync(services.store, wired.api, interests=wired.interests, erased=wired.erased,
                   consent=wired.consent, clock=clock, sleep=clock.sleep,
                   config=TagSyncConfig(group_name=GROUP, min_interval_s=0,
                                        calls_per_minute=calls_per_minute, batch=batch))


def test_point3_thousand_contacts_stay_inside_the_rate_limit(
        services: Services, fake: FakeWeCom) -> None:
    clock = FakeTime()
    c = fake.contacts
    c.clock = clock
    c.rate_limit, c.rate_window_s = 100, 60.0  # the corp's limit per API per minute, scaled
    topics = ["辅食添加", "睡眠", "出牙", "湿疹", "便秘", "防晒", "敏感肌", "保养"]
    for n in range(1000):
        ext = f"wm{n:04d}"
        c.add_contact(ext, follow=f"sales{n % 7}")
        talk(services, ext, {topics[n % 8]: 0.9, topics[(n + 3) % 8]: 0.8})
        if n % 10:  # every tenth contact never consented
            agree(services, ext)
    sync = timed(services, clock, calls_per_minute=80, batch=100)
    start = clock()
    report = sync.sync_all()
    assert c.refused_for_rate == 0
    assert max(c.max_in_window.values()) <= 80
    assert report.changed == 900 and not report.errors
    assert clock() - start >= 60 * (900 // 80)  # it waited for the budget, minute by minute
    for n in (1, 2, 11, 999):
        assert c.tags_of(f"wm{n:04d}", f"sales{n % 7}") == {topics[n % 8], topics[(n + 3) % 8]}
    assert c.tags_of("wm0010", "sales3") == set()  # no consent
    # Converged: a second full run writes nothing.
    marks = len(fake.sent(MARK))
    again = sync.sync_all()
    assert again.changed == 0 and again.unchanged == 900 and len(fake.sent(MARK)) == marks
    assert c.refused_for_rate == 0


def test_point3_cli_dry_run_shows_what_would_change(
        tmp_path: Path, fake: FakeWeCom) -> None:
    settings = _settings(tmp_path, fake)
    fake.contacts.add_contact("wmA", follow="lifang")
    svc = build_services(settings)
    try:
        talk(svc, "wmA", {"辅食添加": 0.9})
        agree(svc, "wmA")
    finally:
        svc.close()
    args = build_parser().parse_args(["tags", "sync", "--dry-run"])
    out = io.StringIO()
    with redirect_stdout(out):
        assert args.fn(args, settings) == 0
    text = out.getvalue()
    assert "1 would change" in text and "would create tags: 辅食添加" in text
    assert "wmA (@lifang, interests): +辅食添加" in text
    assert writes(fake) == []


def test_point3_the_worker_job_runs_the_sync(services: Services, fake: FakeWeCom) -> None:
    fake.contacts.add_contact("wmA", follow="lifang")
    talk(services, "wmA", {"辅食添加": 0.9})
    agree(services, "wmA")
    stop = threading.Event()
    claims: list[bool] = []

    def claim() -> bool:  # the second interval is another process's
        claims.append(len(claims) != 1)
        return claims[-1]

    t = threading.Thread(target=run_tag_sync, args=(services.customers.tags,),
                         kwargs={"stop": stop, "interval_s": 0.05, "claim": claim})
    t.start()
    deadline = time.monotonic() + 30
    while len(claims) < 3:
        assert time.monotonic() < deadline, "the job did not run"
        time.sleep(0.05)
    stop.set()
    t.join(timeout=30)
    assert fake.contacts.tags_of("wmA", "lifang") == {"辅食添加"}
    assert len(fake.sent(MARK)) == 1  # later runs found it in step


def test_point3_no_job_and_a_clear_error_without_wecom(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", embedder="hash", embedded_worker=False)
    svc = build_services(settings)
    try:
        assert start_tag_sync(svc, stop=threading.Event()) is None
        with pytest.raises(NotConfiguredError):
            svc.customers.tags.sync_contacts(["wmA"], dry_run=True)
    finally:
        svc.close()
