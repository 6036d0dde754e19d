"""A catalog change through the webhook of one `serve` process reaches the recommendations of
every process within 5 s (CONTRACTS §4–§5; two real uvicorn processes on one redis-server)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.catalog_sync.support import item_json
from tests.conftest import API_KEY
from tests.serve import ServeProcess

H = {"Authorization": f"Bearer {API_KEY}"}
DEADLINE_S = 5.0  # CONTRACTS: every process, within 5 s


def _serve(redis_url: str, workdir: Path) -> ServeProcess:
    return ServeProcess({
        "MINGPIAN_REDIS_URL": redis_url, "MINGPIAN_API_KEYS": API_KEY,
        "MINGPIAN_DATA_DIR": str(workdir / "data"), "MINGPIAN_LOG_LEVEL": "WARNING",
        "MINGPIAN_EMBEDDER": "hash:128",  # the propagation under test needs no model
    }, workdir=workdir)


@pytest.fixture
def two(clean_redis_url: str, tmp_path: Path) -> Iterator[list[ServeProcess]]:
    procs = [_serve(clean_redis_url, tmp_path / f"p{i}") for i in range(2)]
    try:
        for p in procs:
            p.wait_ready()
        yield procs
    finally:
        for p in procs:
            p.stop()


def _ids(c: httpx.Client, s: ServeProcess, text: str, **extra: Any) -> list[str]:
    r = c.post(s.url + "/v1/recommendations/query", headers=H,
               json={"text": text, "k": 5} | extra)
    assert r.status_code == 200
    return [i["id"] for i in r.json()["items"]]


def _on_both(c: httpx.Client, procs: list[ServeProcess], ok: Callable[[ServeProcess], bool]) -> float:
    """Return the seconds until ok holds on every process (fail after the deadline)."""
    start = time.monotonic()
    pending = list(procs)
    while pending and time.monotonic() - start < DEADLINE_S:
        pending = [s for s in pending if not ok(s)]
        if pending:
            time.sleep(0.05)
    assert not pending, f"not reflected on {[s.url for s in pending]} within {DEADLINE_S} s"
    return time.monotonic() - start


def test_webhook_change_reaches_every_process(two: list[ServeProcess]) -> None:
    a, b = two
    title = "高景观可躺婴儿推车 遛娃神器"
    base = [item_json(f"sku-{i}", title=f"普通商品{i}", tags=["敏感肌"]) for i in range(20)]
    with httpx.Client(timeout=10) as c:
        r = c.post(a.url + "/v1/catalog/items", headers=H, json={"items": base})
        assert r.status_code == 200 and r.json()["created"] == 20
        _on_both(c, two, lambda s: len(_ids(c, s, "普通商品")) == 5)

        # 1. a new item through the webhook of process A
        new = item_json("stroller", title=title, tags=["遛娃"], updated_at="2026-11-03T00:00:00Z",
                        availability=[{"provider_id": "sh-01", "price_cents": 100, "stock": 3},
                                      {"provider_id": "bj-01", "price_cents": 100, "stock": 2}])
        assert c.post(a.url + "/v1/catalog/items", headers=H, json=new).status_code == 200
        _on_both(c, two, lambda s: _ids(c, s, title)[:1] == ["stroller"])

        # 2. sold out at sh-01, through process B
        sold = new | {"availability": [{"provider_id": "sh-01", "price_cents": 100, "stock": 0},
                                       {"provider_id": "bj-01", "price_cents": 100, "stock": 2}],
                      "updated_at": "2026-11-03T00:01:00Z"}
        assert c.post(b.url + "/v1/catalog/items", headers=H, json=sold).status_code == 200
        _on_both(c, two, lambda s: "stroller" not in _ids(c, s, title, provider_id="sh-01"))
        assert all(_ids(c, s, title)[:1] == ["stroller"] for s in two)  # still sold elsewhere

        # 3. deactivated through A, then 4. deleted through B
        off = sold | {"active": False, "updated_at": "2026-11-03T00:02:00Z"}
        assert c.post(a.url + "/v1/catalog/items", headers=H, json=off).status_code == 200
        _on_both(c, two, lambda s: "stroller" not in _ids(c, s, title))
        on = new | {"updated_at": "2026-11-03T00:03:00Z"}
        assert c.post(a.url + "/v1/catalog/items", headers=H, json=on).status_code == 200
        _on_both(c, two, lambda s: _ids(c, s, title)[:1] == ["stroller"])
        assert c.delete(b.url + "/v1/catalog/items/stroller", headers=H).status_code == 200
        _on_both(c, two, lambda s: "stroller" not in _ids(c, s, title))
        # Per-user answers on both processes follow too.
        for s in two:
            got = c.get(s.url + "/v1/recommendations", headers=H,
                        params={"user_id": "u1", "k": 50}).json()
            assert "stroller" not in [i["id"] for i in got["items"]]
