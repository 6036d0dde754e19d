"""`mingpian serve --workers 2` on embedded SQLite: two processes on one port take
concurrent callbacks over real HTTP; every distinct message is queued once, none is lost,
whichever process answered each delivery."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from app.services import INBOX
from store.sqlite import SQLiteStore
from tests.bot.support import AES_KEY, CORP_ID, TOKEN, message_xml, next_msg_id, wecom_post
from tests.serve import ServeProcess


def test_two_serve_processes_queue_each_message_once(tmp_path: Path) -> None:
    serve = ServeProcess({
        "MINGPIAN_DATA_DIR": str(tmp_path / "data"), "MINGPIAN_REDIS_URL": "",
        "MINGPIAN_EMBEDDER": "hash", "MINGPIAN_EMBEDDED_WORKER": "false",
        "MINGPIAN_LOG_LEVEL": "WARNING", "MINGPIAN_WECOM__CORP_ID": CORP_ID,
        "MINGPIAN_WECOM__TOKEN": TOKEN, "MINGPIAN_WECOM__AES_KEY": AES_KEY,
        "MINGPIAN_WECOM__AGENT_ID": "1000002",
    }, workdir=tmp_path, args=("--workers", "2"))
    url = f"{serve.url}/wecom/callback"
    try:
        serve.wait_ready()
        children = subprocess.run(["pgrep", "-P", str(serve.proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) >= 2  # two serving processes (and uvicorn's supervisor)

        posts = [wecom_post(message_xml(content=f"第{i}条", msg_id=next_msg_id()))
                 for i in range(300)]
        deliveries = posts + posts[:100]  # WeChat retries a third of them

        def send(post: tuple[dict[str, str], bytes]) -> int:
            with httpx.Client(timeout=10) as c:
                return c.post(url, params=post[0], content=post[1]).status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(send, deliveries))
        assert statuses == [200] * len(deliveries)
    finally:
        serve.stop()
    store = SQLiteStore(tmp_path / "data" / "mingpian.db")
    try:
        assert store.queue_depth(INBOX) == 300
        items = store.claim(INBOX, consumer="t", max_items=1000, visibility_s=30)
        texts = sorted(i.payload["fields"]["Content"] for i in items)
        assert texts == sorted(f"第{i}条" for i in range(300))
    finally:
        store.close()
