"""The mall's catalog webhooks: POST /v1/catalog/items, DELETE, events; CLI import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app import cli
from app.settings import get_settings
from catalog.repo import CatalogRepo
from nlp.embed import HashEmbedder
from tests.catalog_sync.support import item_json
from tests.conftest import API_KEY, OpenSQLite

H = {"X-API-Key": API_KEY}


def test_upsert_one_then_get_it_back_exactly(client: TestClient) -> None:
    doc = item_json("sku-1", title="有机高铁米粉 6月+", tags=["辅食添加", "补铁"],
                    availability=[{"provider_id": "sh-01", "price_cents": 6500, "stock": 40}])
    r = client.post("/v1/catalog/items", json=doc, headers=H)
    assert r.status_code == 200
    assert r.json() == {"received": 1, "accepted": 1, "created": 1, "updated": 0, "unchanged": 0,
                        "stale": 0, "embedded": 1, "rejected": 0, "errors": []}
    assert client.get("/v1/catalog/items/sku-1", headers=H).json() == doc
    again = client.post("/v1/catalog/items", json=doc, headers=H).json()
    assert again["unchanged"] == 1 and again["embedded"] == 0
    cheaper = client.post("/v1/catalog/items", headers=H, json=doc | {
        "price_cents": 5900, "updated_at": "2026-11-02T00:00:00Z"}).json()
    assert cheaper["updated"] == 1 and cheaper["embedded"] == 0  # same text: same vector


def test_batch_reports_invalid_items_by_index(client: TestClient) -> None:
    items = [item_json("a"), item_json("b", price_cents=-1), {"id": "c"},
             item_json("d", url="javascript:alert(1)"), item_json("e", kind="course"), 42]
    r = client.post("/v1/catalog/items", json={"items": items}, headers=H)
    assert r.status_code == 200
    body = r.json()
    assert (body["received"], body["accepted"], body["created"], body["rejected"]) == (6, 2, 2, 4)
    errs = {e["index"]: e for e in body["errors"]}
    assert sorted(errs) == [1, 2, 3, 5]
    assert errs[1]["id"] == "b" and errs[1]["error"].startswith("price_cents:")
    assert errs[3]["error"].startswith("url:") and errs[5]["id"] is None
    assert client.get("/v1/catalog/items/e", headers=H).status_code == 200
    assert client.get("/v1/catalog/items/b", headers=H).status_code == 404


def test_request_level_errors_are_json(client: TestClient) -> None:
    one_bad = client.post("/v1/catalog/items", json=item_json("x", price_cents=-5), headers=H)
    assert one_bad.status_code == 422
    assert one_bad.json()["error"]["code"] == "invalid"
    assert one_bad.json()["error"]["details"][0]["loc"] == ["price_cents"]
    assert client.post("/v1/catalog/items", json={"items": "x"}, headers=H).status_code == 422
    many = {"items": [item_json(f"s{i}") for i in range(1001)]}
    assert client.post("/v1/catalog/items", json=many, headers=H).status_code in (413, 422)
    assert client.post("/v1/catalog/items", content=b"{nope", headers=H | {
        "content-type": "application/json"}).status_code == 422
    assert client.post("/v1/catalog/items", json=item_json("x")).status_code == 401
    assert client.delete("/v1/catalog/items/x").status_code == 401


def test_delete_removes_from_catalog_and_recommendations(client: TestClient) -> None:
    client.post("/v1/catalog/items", headers=H, json={"items": [
        item_json("stroller", title="高景观可躺婴儿推车", tags=["遛娃"]),
        item_json("cream", title="敏感肌修护面霜")]})
    q = {"text": "高景观可躺婴儿推车", "k": 2}
    first = client.post("/v1/recommendations/query", json=q, headers=H).json()["items"]
    assert first[0]["id"] == "stroller"  # this process sees its own write at once
    r = client.delete("/v1/catalog/items/stroller", headers=H)
    assert r.status_code == 200 and r.json() == {"id": "stroller", "deleted": True}
    assert client.delete("/v1/catalog/items/stroller", headers=H).status_code == 404
    after = client.post("/v1/recommendations/query", json=q, headers=H).json()["items"]
    assert [i["id"] for i in after] == ["cream"]
    bad = client.delete("/v1/catalog/items/has%20space", headers=H)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid"


def test_events_feed_popularity(client: TestClient) -> None:
    client.post("/v1/catalog/items", headers=H, json={"items": [item_json("a"), item_json("b")]})
    for _ in range(3):
        r = client.post("/v1/catalog/events", headers=H,
                        json={"event": "click", "item_id": "b", "provider_id": "sh-01"})
        assert r.status_code == 202
    client.post("/v1/catalog/events", headers=H,
                json={"event": "order", "item_id": "a", "user_id": "buyer"})
    pop = client.get("/v1/recommendations", params={"user_id": "x", "provider_id": "sh-01"},
                     headers=H).json()
    assert pop["strategy"] == "provider_popular" and pop["items"][0]["id"] == "b"
    mine = client.get("/v1/recommendations", params={"user_id": "buyer"}, headers=H).json()
    assert "a" not in [i["id"] for i in mine["items"]]  # bought
    bad = client.post("/v1/catalog/events", headers=H, json={"event": "like", "item_id": "a"})
    assert bad.status_code == 422


def test_cli_imports_a_file_reporting_bad_lines(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str],
                                                open_sqlite: OpenSQLite) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("MINGPIAN_DATA_DIR", str(data))
    monkeypatch.setenv("MINGPIAN_EMBEDDER", "hash:64")
    monkeypatch.delenv("MINGPIAN_REDIS_URL", raising=False)
    f = tmp_path / "items.jsonl"
    f.write_text("\n".join([json.dumps(item_json("a")), "{not json", "",
                            json.dumps(item_json("b", kind="gift")),
                            json.dumps(item_json("c"))]) + "\n", encoding="utf-8")
    get_settings.cache_clear()
    try:
        assert cli.main(["catalog", "import", str(f), "--no-progress"]) == 1
        out = capsys.readouterr().out
        assert "2 new" in out and "2 rejected" in out
        assert "line 2" in out and "line 4 (b)" in out
        assert cli.main(["catalog", "import", "--demo", "--no-progress"]) == 0
        assert "152 new" in capsys.readouterr().out
        assert cli.main(["catalog", "import", "--demo", "--no-progress"]) == 0
        assert "152 unchanged" in capsys.readouterr().out
    finally:
        get_settings.cache_clear()
    repo = CatalogRepo(open_sqlite(data / "mingpian.db"), embedder=HashEmbedder(64))
    assert repo.count() == 154
