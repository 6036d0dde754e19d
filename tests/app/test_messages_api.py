"""POST /v1/messages: one or many messages, duplicates, per-item errors by index."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.app.test_wechat_api import depth
from tests.conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def msg(n: int, **over: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"msg_id": f"a{n}", "platform": "wecom", "group_id": "g-muying-01",
                         "user_id": "u-1001", "user_name": "小雨妈妈",
                         "text": "宝宝六个月了，辅食先加什么好？", "ts": 1764000000 + n}
    m.update(over)
    return m


@pytest.fixture
def client(bot_client: TestClient) -> TestClient:
    """The bot's client (tests/app/conftest.py): from loopback, so depth() reads /metrics."""
    return bot_client


def test_one_message(client: TestClient) -> None:
    r = client.post("/v1/messages", json=msg(1), headers=AUTH)
    assert r.status_code == 200
    assert r.json() == {"accepted": 1, "duplicates": 0, "errors": []}
    again = client.post("/v1/messages", json=msg(1), headers=AUTH)
    assert again.json() == {"accepted": 0, "duplicates": 1, "errors": []}
    assert depth(client) == 1


def test_many_with_duplicates_and_errors_by_index(client: TestClient) -> None:
    batch = [
        msg(1),
        msg(2, platform="archive", group_id=None),
        msg(1),  # a duplicate inside the request
        msg(3, ts="yesterday"),  # malformed
        "not an object",
        msg(4, user_id="has spaces"),  # not an id
        {"msg_id": "a5"},  # missing fields
        msg(6, platform="qq"),
        msg(7),
    ]
    r = client.post("/v1/messages", json={"messages": batch}, headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 3 and body["duplicates"] == 1
    assert [e["index"] for e in body["errors"]] == [3, 4, 5, 6, 7]
    assert "ts" in body["errors"][0]["error"]
    assert "user_id" in body["errors"][2]["error"]
    assert depth(client) == 3


def test_limits_and_auth(client: TestClient) -> None:
    assert client.post("/v1/messages", json=msg(1)).status_code == 401
    too_many = {"messages": [msg(n) for n in range(1001)]}
    r = client.post("/v1/messages", json=too_many, headers=AUTH)
    assert r.status_code == 422
    assert client.post("/v1/messages", json={"messages": {"a": 1}},
                       headers=AUTH).status_code == 422
    assert client.post("/v1/messages", content=b"[1,2", headers={
        **AUTH, "content-type": "application/json"}).status_code == 422
    r = client.post("/v1/messages", json={"messages": [msg(n) for n in range(1000)]},
                    headers=AUTH)
    assert r.json()["accepted"] == 1000
    assert depth(client) == 1000
