"""Issue 13: Prometheus multiprocess mode. `serve --workers 2` and a `mingpian worker` on the
same machine share one metrics directory; /metrics, whichever process answers it, sums
every process's counters."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from app.metrics import Metrics
from tests.bot.support import AES_KEY, CORP_ID, TOKEN, message_xml, next_msg_id, wecom_post
from tests.serve import ServeProcess

N = 60


def _sample(text: str, name: str, labels: str) -> float:
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_single_process_metrics_stay_in_memory() -> None:
    # No PROMETHEUS_MULTIPROC_DIR in the test process: one serve keeps its own registry.
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    m = Metrics()
    stats = m.consumer_stats("inbox")
    stats.processed += 3
    stats.dead += 1
    stats.processed += 2
    text = m.exposition().decode()
    assert m.multiprocess_dir is None
    assert _sample(text, "mingpian_queue_processed_total", 'queue="inbox"') == 5
    assert _sample(text, "mingpian_queue_dead_lettered_total", 'queue="inbox"') == 1


def test_serve_workers_and_worker_counters_are_summed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = {
        "MINGPIAN_DATA_DIR": str(data), "MINGPIAN_REDIS_URL": "",
        "MINGPIAN_EMBEDDER": "hash", "MINGPIAN_EMBEDDED_WORKER": "false",
        "MINGPIAN_LOG_LEVEL": "WARNING", "MINGPIAN_WECOM__CORP_ID": CORP_ID,
        "MINGPIAN_WECOM__TOKEN": TOKEN, "MINGPIAN_WECOM__AES_KEY": AES_KEY,
        "MINGPIAN_WECOM__AGENT_ID": "1000002", "MINGPIAN_DEMO": "true",
    }
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    stale = data / "prometheus" / "counter_999999.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by an earlier run")
    serve = ServeProcess(settings, workdir=tmp_path, args=("--workers", "2"))
    worker: subprocess.Popen[bytes] | None = None
    try:
        serve.wait_ready()
        assert not stale.exists()  # cleaned at start
        posts = [wecom_post(message_xml(content=f"第{i}条 防晒推荐", msg_id=next_msg_id()))
                 for i in range(N)]

        def send(post: tuple[dict[str, str], bytes]) -> int:
            with httpx.Client(timeout=10) as c:
                return c.post(f"{serve.url}/wecom/callback", params=post[0],
                              content=post[1]).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert list(pool.map(send, posts)) == [200] * N
        pids = {f.stem.rsplit("_", 1)[1] for f in (data / "prometheus").glob("counter_*.db")}
        assert len(pids) >= 2  # both serve processes recorded
        for _ in range(4):  # any serve process answers with the sum of both
            text = httpx.get(f"{serve.url}/metrics", timeout=5).text
            assert _sample(text, "mingpian_http_requests_total",
                           'route="/wecom/callback",status="200"') == N
            assert _sample(text, "mingpian_queue_depth", 'queue="inbox"') == N

        worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], cwd=tmp_path,
                                  env=env | settings, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        processed = 0.0
        while time.monotonic() < deadline and processed < N:
            time.sleep(0.3)
            text = httpx.get(f"{serve.url}/metrics", timeout=5).text
            processed = _sample(text, "mingpian_queue_processed_total", 'queue="inbox"')
        assert processed == N  # the worker's counter, read through serve's /metrics
        assert _sample(text, "mingpian_queue_dead_lettered_total", 'queue="inbox"') == 0
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)
        serve.stop()
