"""`mingpian ingest --format wecom-archive FILE` (issue 14 point 6): decrypted native archive
messages, one a line, mapped like `archive pull`; resumable; same dedup keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import build_parser
from app.commands.archive import QUEUE
from bot.consent import ConsentBook
from store import open_store
from tests.bot.archive_fake.support import text
from tests.conftest import make_settings

T0 = 1_764_000_000_000


def _lines(path: Path, docs: list[object]) -> Path:
    path.write_text("\n".join(d if isinstance(d, str) else json.dumps(d, ensure_ascii=False)
                              for d in docs) + "\n", encoding="utf-8")
    return path


def _ingest(path: Path, data_dir: Path) -> int:
    settings = make_settings(data_dir, embedder="hash", embedded_worker=False)
    args = build_parser().parse_args(["ingest", "--format", "wecom-archive", "--quiet",
                                      str(path)])
    return int(args.fn(args, settings))


def test_point6_archive_export_lines_are_mapped_and_queued_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs: list[object] = [
        text("宝宝湿疹用什么好", msgid="e1", sender="wmMom", msgtime_ms=T0),
        text("辅食先加米粉", msgid="CAQQ/+x=", sender="wmMom", msgtime_ms=T0 + 1),
        {"msgid": "rv", "action": "recall", "from": "wmMom", "roomid": "wrRoom01",
         "msgtime": T0 + 2, "msgtype": "revoke", "revoke": {"pre_msgid": "CAQQ/+x="}},
        {"msgid": "im", "action": "send", "from": "wmMom", "roomid": "wrRoom01",
         "msgtime": T0 + 3, "msgtype": "image", "image": {"sdkfileid": "f"}},
        {"msgid": "ag", "action": "send", "from": "wmLily", "roomid": "wrRoom01",
         "msgtime": T0 + 4, "msgtype": "agree", "agree": {"userid": "wmLily",
                                                          "agree_time": T0 + 4}},
        text("防晒霜推荐", msgid="e3", sender="wmLily", msgtime_ms=T0 + 5),
        text("单聊不要", msgid="e4", sender="wmLily", room="", msgtime_ms=T0 + 6),
        "not json",
        {"msgid": "x", "msgtype": "text"},
    ]
    path = _lines(tmp_path / "export.jsonl", docs)
    data = tmp_path / "data"
    assert _ingest(path, data) == 1  # two bad lines reported
    out = capsys.readouterr()
    assert "3 accepted, 0 duplicates, 2 errors in 9 lines" in out.out
    assert "media:image 1" in out.out and "recalled 1" in out.out
    assert "line 8: not JSON" in out.err
    # Again from the start: nothing queued twice.
    args = build_parser().parse_args(["ingest", "--format", "wecom-archive", "--quiet",
                                      "--restart", str(path)])
    args.fn(args, make_settings(data, embedder="hash"))
    assert "0 accepted, 3 duplicates" in capsys.readouterr().out
    store = open_store(redis_url=None, data_dir=data)
    try:
        got = store.claim(QUEUE, consumer="t", max_items=100, visibility_s=30)
        msgs = [i.payload["message"] for i in got]
        # The recalled line was queued before its recall: the profiles' marker keeps it out.
        assert sorted(m["msg_id"] for m in msgs) == sorted(["e1", msgs[1]["msg_id"], "e3"])
        assert all(m["platform"] == "archive" for m in msgs)
        assert ConsentBook(store).has_consent("wmLily")
        assert store.seen_once("profile", [f"profile:{msgs[1]['msg_id']}"])
    finally:
        store.close()


def test_point6_a_disagree_line_erases_through_the_app(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = _lines(tmp_path / "export.jsonl", [
        text("我说过的话", msgid="d1", sender="wmGone", msgtime_ms=T0),
        {"msgid": "dz", "action": "send", "from": "wmGone", "roomid": "wrRoom01",
         "msgtime": T0 + 1, "msgtype": "disagree",
         "disagree": {"userid": "wmGone", "agree_time": T0 + 1}},
        text("之后的话", msgid="d2", sender="wmGone", msgtime_ms=T0 + 2)])
    data = tmp_path / "data"
    assert _ingest(path, data) == 0
    assert "1 accepted" in capsys.readouterr().out
    store = open_store(redis_url=None, data_dir=data)
    try:
        # The app's erasure ran: d1 (queued before the disagree) is gone from the queue, and
        # d2 was never queued.
        assert store.queue_depth(QUEUE) == 0
        assert not ConsentBook(store).has_consent("wmGone")
    finally:
        store.close()
