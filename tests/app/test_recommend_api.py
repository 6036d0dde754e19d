"""GET /v1/recommendations and POST /v1/recommendations/query (CONTRACTS §5)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.services import Services, build_services
from app.settings import Settings
from catalog_sync.loader import demo_catalog_path, import_rows, read_jsonl
from models.catalog import CatalogItem
from models.messages import ChatMessage
from tests.conftest import API_KEY

H = {"Authorization": f"Bearer {API_KEY}"}
DEMO = {d["id"]: CatalogItem.model_validate(d) for d in
        (json.loads(line) for line in demo_catalog_path().read_text(encoding="utf-8").splitlines()
         if line)}
ITEM_KEYS = {"id", "kind", "title", "score", "confidence", "price_cents", "url", "reason"}


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    svc = build_services(settings)
    import_rows(svc.catalog, read_jsonl(demo_catalog_path()))
    svc.index.refresh()
    yield svc
    svc.close()


def _shape(body: dict[str, Any]) -> None:
    assert set(body) == {"items", "strategy", "confident"}
    assert body["strategy"] in {"profile", "group", "provider_popular", "global_popular", "query"}
    assert isinstance(body["confident"], bool)
    for it in body["items"]:
        assert set(it) == ITEM_KEYS
        assert isinstance(it["score"], float) and isinstance(it["price_cents"], int)
        assert 0.0 <= it["confidence"] <= 1.0
        assert it["reason"]


def test_profile_from_real_chat_drives_recommendations(client: TestClient,
                                                       services: Services) -> None:
    texts = ["宝宝六个月了，辅食先加什么好？", "米粉要选高铁的吗", "第一口辅食吃什么比较好",
             "辅食添加要注意过敏吗"]
    services.pipeline.process([
        ChatMessage(msg_id=f"m{i}", platform="wecom", group_id="g-muying", user_id="u-1001",
                    text=t, ts=int(time.time()) - 60 + i) for i, t in enumerate(texts)])
    r = client.get("/v1/recommendations", headers=H,
                   params={"user_id": "u-1001", "k": 5, "provider_id": "sh-01"})
    assert r.status_code == 200
    body = r.json()
    _shape(body)
    assert body["strategy"] == "profile" and len(body["items"]) == 5
    top = body["items"][0]
    assert top["reason"] == "因为你最近聊到「辅食添加」"
    assert "辅食添加" in DEMO[top["id"]].tags
    for it in body["items"]:
        assert DEMO[it["id"]].is_available("sh-01")
        assert it["price_cents"] == DEMO[it["id"]].price_at("sh-01")
    # A newcomer to the same group gets what the group talks about.
    cold = client.get("/v1/recommendations", headers=H,
                      params={"user_id": "u-new", "group_id": "g-muying", "k": 3}).json()
    assert cold["strategy"] == "group" and cold["items"][0]["reason"].startswith("因为群里最近")


def test_query_answers_free_text(client: TestClient) -> None:
    r = client.post("/v1/recommendations/query", headers=H,
                    json={"text": "宝宝晚上老醒，一晚上起来三四次", "k": 3, "provider_id": "bj-01",
                          "kind": None})
    assert r.status_code == 200
    body = r.json()
    _shape(body)
    assert body["strategy"] == "query" and len(body["items"]) == 3
    assert "睡眠" in DEMO[body["items"][0]["id"]].tags
    assert all(DEMO[i["id"]].is_available("bj-01") for i in body["items"])
    courses = client.post("/v1/recommendations/query", headers=H,
                          json={"text": "怎么给宝宝添加辅食", "kind": "course"}).json()
    assert courses["items"] and all(i["kind"] == "course" for i in courses["items"])


def test_cold_start_is_popular(client: TestClient) -> None:
    body = client.get("/v1/recommendations", headers=H,
                      params={"user_id": "nobody", "provider_id": "gz-01"}).json()
    _shape(body)
    assert body["strategy"] == "global_popular" and len(body["items"]) == 10
    assert all(DEMO[i["id"]].is_available("gz-01") for i in body["items"])


@pytest.mark.parametrize(("method", "params"), [
    ("get", {}),
    ("get", {"user_id": "u1", "k": 0}),
    ("get", {"user_id": "u1", "k": 101}),
    ("get", {"user_id": "u1", "k": "ten"}),
    ("get", {"user_id": "u1", "diversity": 1.5}),
    ("get", {"user_id": "u1", "diversity": -0.1}),
    ("get", {"user_id": "u1", "kind": "service"}),
    ("get", {"user_id": "bad id"}),
    ("get", {"user_id": "u1", "provider_id": "x" * 65}),
    ("post", {}),
    ("post", {"text": ""}),
    ("post", {"text": "   "}),
    ("post", {"text": "米粉", "k": 0}),
    ("post", {"text": "米粉", "kind": "gift"}),
    ("post", {"text": "米粉", "provider_id": "a b"}),
    ("post", {"text": "米粉", "surprise": 1}),
    ("post", {"text": "x" * 2001}),
])
def test_invalid_requests_are_422_json(client: TestClient, method: str,
                                       params: dict[str, Any]) -> None:
    if method == "get":
        r = client.get("/v1/recommendations", params=params, headers=H)
    else:
        r = client.post("/v1/recommendations/query", json=params, headers=H)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid" and err["details"]


def test_needs_an_api_key(client: TestClient) -> None:
    assert client.get("/v1/recommendations", params={"user_id": "u1"}).status_code == 401
    assert client.post("/v1/recommendations/query", json={"text": "米粉"}).status_code == 401
