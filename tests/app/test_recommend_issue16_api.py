"""Issue 16 over HTTP: confidence and `confident` in every answer, `min_confidence`, and
GET /v1/items/{id}/similar (CONTRACTS §5)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.services import Services, build_services
from app.settings import Settings
from catalog_sync.loader import demo_catalog_path, import_rows, read_jsonl
from models.catalog import CatalogItem
from tests.conftest import API_KEY

H = {"Authorization": f"Bearer {API_KEY}"}
DEMO = {d["id"]: CatalogItem.model_validate(d) for d in
        (json.loads(line) for line in demo_catalog_path().read_text(encoding="utf-8").splitlines()
         if line)}


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    svc = build_services(settings)
    import_rows(svc.catalog, read_jsonl(demo_catalog_path()))
    svc.index.refresh()
    yield svc
    svc.close()


def test_point_confidence_query_answers_say_how_sure(client: TestClient) -> None:
    need = client.post("/v1/recommendations/query", headers=H,
                       json={"text": "宝宝湿疹反复，用什么霜好", "k": 5}).json()
    assert need["confident"] is True and need["strategy"] == "query"
    conf = [i["confidence"] for i in need["items"]]
    assert conf == sorted(conf, reverse=True) and all(0 <= c <= 1 for c in conf)
    chat = client.post("/v1/recommendations/query", headers=H,
                       json={"text": "哈哈哈笑死我了", "k": 5}).json()
    assert chat["confident"] is False
    # The mall asks for sure answers only: chit-chat then has none.
    sure = client.post("/v1/recommendations/query", headers=H,
                       json={"text": "哈哈哈笑死我了", "k": 5, "min_confidence": 0.5}).json()
    assert sure["items"] == [] and sure["confident"] is False
    bad = client.post("/v1/recommendations/query", headers=H,
                      json={"text": "防晒", "min_confidence": 2})
    assert bad.status_code == 422


def test_point_confidence_user_answers(client: TestClient) -> None:
    cold = client.get("/v1/recommendations", headers=H, params={"user_id": "nobody"}).json()
    assert cold["strategy"] == "global_popular" and cold["confident"] is False
    assert all("confidence" in i for i in cold["items"])
    none = client.get("/v1/recommendations", headers=H,
                      params={"user_id": "nobody", "min_confidence": 0.9}).json()
    assert none["items"] == []


def test_point_similar_items_endpoint(client: TestClient) -> None:
    src = next(it for it in DEMO.values() if "湿疹" in it.tags and it.active)
    r = client.get(f"/v1/items/{src.id}/similar", headers=H, params={"k": 4})
    assert r.status_code == 200
    body = r.json()
    assert body["strategy"] == "similar" and len(body["items"]) == 4
    assert src.id not in {i["id"] for i in body["items"]}
    assert set(body["items"][0]) == {"id", "kind", "title", "score", "confidence",
                                     "price_cents", "url", "reason"}
    at = client.get(f"/v1/items/{src.id}/similar", headers=H,
                    params={"k": 10, "provider_id": "bj-01"}).json()
    for i in at["items"]:
        it = DEMO[i["id"]]
        assert it.is_available("bj-01") and i["price_cents"] == it.price_at("bj-01")
    assert client.get("/v1/items/no-such-item/similar", headers=H).status_code == 404
    assert client.get(f"/v1/items/{src.id}/similar").status_code == 401
