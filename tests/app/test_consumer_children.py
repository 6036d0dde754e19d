"""Issue 17 point 2: in embedded mode `serve`'s consumer tags with the model in child
processes (acknowledgements never wait on tagging in the serving process's GIL), and the
messages it tags still reach the profiles; the children go when the app stops.

The real default model (`use`) in one child process; /proc tells who the children are."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.test_worker_children import descendants
from tests.conftest import API_KEY, make_settings

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def model_children() -> set[int]:
    """Return this process's descendants other than multiprocessing's resource tracker
    (started by the first spawn, it lives as long as the test process)."""
    out = set()
    for pid in descendants(os.getpid()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmd:
            out.add(pid)
    return out


def test_point2_embedded_consumer_tags_in_child_processes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", embedder="use", worker_embedder_processes=1,
                             embedder_threads=1, purge_interval_s=0)
    before = model_children()
    app = create_app(settings, consumer_children=True)
    with TestClient(app) as client:
        children = model_children() - before
        assert children, "the consumer's model runs in no child process"
        r = client.post("/v1/messages", headers=AUTH, json={
            "msg_id": "c17-1", "platform": "wecom", "group_id": "g-1", "user_id": "u-17",
            "text": "宝宝六个月了，辅食先加什么好？", "ts": int(time.time())})
        assert r.status_code == 200 and r.json()["accepted"] == 1
        # The first message builds the tagger's tag index (hundreds of sentences through
        # the child): a minute or more on a loaded 2-core machine.
        deadline = time.monotonic() + 300
        profile = None
        while time.monotonic() < deadline:
            got = client.get("/v1/users/u-17/profile", headers=AUTH)
            if got.status_code == 200 and got.json().get("tags"):
                profile = got.json()
                break
            time.sleep(0.2)
        assert profile is not None, "the message was never applied to the profile"
        assert any(t["tag"] == "辅食添加" for t in profile["tags"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and children & model_children():
        time.sleep(0.2)
    assert not children & model_children(), "the model's children outlived serve"


def test_point2_no_children_without_an_embedded_consumer(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", embedder="use", embedded_worker=False,
                             worker_embedder_processes=1)
    before = model_children()
    with TestClient(create_app(settings, consumer_children=True)):
        assert not model_children() - before
