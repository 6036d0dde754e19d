"""`mingpian ingest`: progress, duplicates, errors by line, resume after an interruption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import cli
from app.services import INBOX
from app.settings import get_settings
from bot.inbox import Inbox
from bot.ingest import PROGRESS_NS, ingest_jsonl
from store import Store


def _line(n: int) -> str:
    return json.dumps({"msg_id": f"d{n:04d}", "platform": "wecom", "group_id": "g-muying-01",
                       "user_id": f"u-{1000 + n % 7}", "user_name": "小雨妈妈",
                       "text": f"第{n}条：宝宝辅食先加什么好？", "ts": 1764000000 + n},
                      ensure_ascii=False)


def _write(path: Path, n: int, *, dup_every: int = 0, bad: tuple[int, ...] = ()) -> int:
    """Write n messages (plus redeliveries and bad lines); return the distinct count."""
    lines = []
    for i in range(1, n + 1):
        lines.append(_line(i))
        if dup_every and i % dup_every == 0:
            lines.append(_line(i))  # a WeCom retry: same msg_id on the next line
        if i in bad:
            lines.append('{"msg_id": "broken", ')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return n


def _inbox(store: Store) -> Inbox:
    return Inbox(store, queue=INBOX, dedup_ttl_s=7 * 86_400)


def test_ingest_counts_duplicates_and_reports_bad_lines(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    _write(path, 100, dup_every=10, bad=(50,))
    seen: list[int] = []
    report = ingest_jsonl(path, inbox=_inbox(store), store=store, on_progress=seen.append)
    assert (report.accepted, report.duplicates, report.error_count) == (100, 10, 1)
    assert report.errors[0][0] == 56  # line 56: after 50 messages and 5 redeliveries
    assert report.done and sum(seen) == path.stat().st_size
    assert store.queue_depth(INBOX) == 100


def test_interrupted_ingest_resumes_where_it_stopped(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    _write(path, 300)
    read = 0

    def interrupt(n: int) -> None:
        nonlocal read
        read += 1
        if read == 120:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest_jsonl(path, inbox=_inbox(store), store=store, on_progress=interrupt,
                     checkpoint_every=50)
    assert store.queue_depth(INBOX) == 120
    second = ingest_jsonl(path, inbox=_inbox(store), store=store)
    assert second.resumed_at_line == 120
    assert (second.accepted, second.duplicates, second.lines) == (180, 0, 180)
    assert store.queue_depth(INBOX) == 300
    third = ingest_jsonl(path, inbox=_inbox(store), store=store)
    assert (third.accepted, third.lines, third.done) == (0, 0, True)


def test_a_lost_checkpoint_costs_nothing_but_duplicates(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    _write(path, 80)
    ingest_jsonl(path, inbox=_inbox(store), store=store)
    # A crash after queueing but before the checkpoint was written: the position is older.
    for key, rec in list(store.scan(PROGRESS_NS)):
        store.put(PROGRESS_NS, key, {**rec.doc, "offset": 0, "line": 0})
    again = ingest_jsonl(path, inbox=_inbox(store), store=store)
    assert (again.accepted, again.duplicates) == (0, 80)
    assert store.queue_depth(INBOX) == 80


def test_limit_and_a_changed_file(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    _write(path, 50)
    first = ingest_jsonl(path, inbox=_inbox(store), store=store, limit=20)
    assert (first.accepted, first.done) == (20, False)
    # The file is replaced by another export: the saved position no longer applies.
    path.write_text("\n".join(_line(i) for i in range(500, 530)) + "\n", encoding="utf-8")
    second = ingest_jsonl(path, inbox=_inbox(store), store=store)
    assert (second.resumed_at_line, second.accepted) == (0, 30)


def test_cli_ingest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MINGPIAN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MINGPIAN_REDIS_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env
    get_settings.cache_clear()
    path = tmp_path / "chat.jsonl"
    _write(path, 40, dup_every=20)
    try:
        assert cli.main(["ingest", str(path), "--limit", "25"]) == 0
        out = capsys.readouterr()
        assert "24 accepted, 1 duplicates" in out.out and "stopped early" in out.out
        assert "chat.jsonl" in out.err  # the progress bar
        assert cli.main(["ingest", str(path), "--quiet"]) == 0
        out = capsys.readouterr()
        assert "16 accepted, 1 duplicates" in out.out
        assert "resumed after line 25" in out.out and "done" in out.out
        assert cli.main(["ingest", str(tmp_path / "missing.jsonl")]) == 2
    finally:
        get_settings.cache_clear()
