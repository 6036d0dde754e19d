"""Issue 13: MINGPIAN_LOG_FORMAT=json — one JSON object a line (ts, level, logger, message),
redacted like the text format."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

from app.logging_filter import JsonFormatter
from app.settings import Settings
from tests.conftest import free_port


def test_json_formatter_writes_one_redacted_object() -> None:
    record = logging.LogRecord("mingpian.worker", logging.WARNING, __file__, 1,
                               "message from %s: 手机 %s", ("u-1", "13812345678"), None)
    try:
        raise ValueError("身份证 110101199003074514")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "mingpian.worker"
    assert entry["message"] == "message from u-1: 手机 [手机号]"
    assert "13812345678" not in line and "110101199003074514" not in line
    assert "ValueError" in entry["exc"]
    assert datetime.fromisoformat(entry["ts"]).utcoffset() is not None


def test_log_format_setting() -> None:
    assert Settings().log_format == "text"
    assert Settings(log_format="json").log_format == "json"


def test_serve_logs_json_lines(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINGPIAN_")} | {
        "MINGPIAN_DATA_DIR": str(tmp_path / "data"), "MINGPIAN_EMBEDDER": "hash",
        "MINGPIAN_DEMO": "true", "MINGPIAN_LOG_FORMAT": "json", "MINGPIAN_LOG_LEVEL": "INFO"}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    started = False
    try:
        deadline = time.monotonic() + 60
        while not started and time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                started = httpx.get(f"http://127.0.0.1:{port}/healthz",
                                    timeout=1).status_code == 200
            if not started:
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert started, f"serve did not start (exit status {proc.returncode}):\n{err[-3000:]}"
    lines = [line for line in (out + err).splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert entries
    assert all({"ts", "level", "logger", "message"} <= e.keys() for e in entries)
    assert any(e["logger"].startswith("uvicorn") for e in entries)
