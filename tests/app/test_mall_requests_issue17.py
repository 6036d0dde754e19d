"""The mall's fast path (app/api/recommend.py MallRequests, issue 17): a valid, authorised
page view (``GET /v1/recommendations``) or search (``POST /v1/recommendations/query``) is
answered ahead of FastAPI's stack exactly as its route answers it; every other request goes
on to the route, with the body it sent; /metrics and the console still count what the fast
path answered."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Message, Scope

from app.console.activity import NS_DAILY, local_day
from app.main import MingpianApp
from app.services import Services, build_services
from app.settings import Settings
from catalog_sync.loader import demo_catalog_path, import_rows, read_jsonl
from models.messages import ChatMessage
from tests.conftest import API_KEY

PATH = "/v1/recommendations"
QUERY = "/v1/recommendations/query"
KEY = [(b"authorization", f"Bearer {API_KEY}".encode())]
JSON = "application/json"
JSON_TYPE = [(b"content-type", JSON.encode())]


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """The demo catalog, and a member and a group who talked about weaning food."""
    svc = build_services(settings)
    import_rows(svc.catalog, read_jsonl(demo_catalog_path()))
    svc.index.refresh()
    texts = ["宝宝六个月了，辅食先加什么好？", "米粉要选高铁的吗", "辅食添加要注意过敏吗"]
    svc.pipeline.process([
        ChatMessage(msg_id=f"m{i}", platform="wecom", group_id="g-muying", user_id="u-1001",
                    text=t, ts=int(time.time()) - 60 + i) for i, t in enumerate(texts)])
    yield svc
    svc.close()


def _scope(client: TestClient, query: dict[str, Any], *, method: str = "GET",
           path: str = PATH, headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": urlencode(query).encode(),
            "headers": [(b"host", b"testserver")] + (KEY if headers is None else headers),
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
            "state": dict(client.app_state)}


def _post(client: TestClient, body: bytes, *,
          headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return _scope(client, {}, method="POST", path=QUERY, headers=(
        [*KEY, *JSON_TYPE, (b"content-length", str(len(body)).encode())]
        if headers is None else headers))


def _call(client: TestClient, scope: Scope, *, route: bool, body: bytes = b""
          ) -> tuple[bool, list[Message], bytes, bool]:
    """Send one request to the fast path (route=False) or to FastAPI's stack and route;
    return whether it was answered, the messages sent, the body the app would go on with
    (b"" when answered), and whether it goes on with the very receive it was given."""
    app = client.app
    assert isinstance(app, MingpianApp)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    async def fast() -> tuple[bool, bytes, bool]:
        go_on = await app.mall.handle(scope, receive, send)
        if go_on is None:
            return True, b"", False
        return False, (await go_on())["body"], go_on is receive

    async def slow() -> tuple[bool, bytes, bool]:
        await FastAPI.__call__(app, scope, receive, send)
        return True, b"", False

    assert client.portal is not None
    answered, rest, untouched = client.portal.call(slow if route else fast)
    return answered, sent, rest, untouched


def _response(sent: list[Message]) -> tuple[int, dict[bytes, bytes], Any]:
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return int(start["status"]), dict(start["headers"]), json.loads(body)


@pytest.mark.parametrize("query", [
    {"user_id": "u-1001"},
    {"user_id": "u-1001", "k": 3, "provider_id": "sh-01", "diversity": 0.0},
    {"user_id": "u-1001", "kind": "course", "min_confidence": 0.2},
    {"user_id": "u-new", "group_id": "g-muying", "k": 4},
    {"user_id": "anon-1", "provider_id": "sh-01", "k": 5},
    {"user_id": "anon-2", "unknown": "ignored", "k": "7"},
])
def test_the_fast_path_answers_as_the_route_does(client: TestClient,
                                                 query: dict[str, Any]) -> None:
    answered, fast, _, _ = _call(client, _scope(client, query), route=False)
    assert answered
    routed, slow, _, _ = _call(client, _scope(client, query), route=True)
    assert routed
    status, headers, body = _response(fast)
    assert (status, headers[b"content-type"]) == (200, b"application/json")
    assert _response(slow) == (status, headers, body)
    assert body["items"] or query["user_id"].startswith("anon")


@pytest.mark.parametrize(("query", "method", "path", "headers"), [
    ({"user_id": "u-1001"}, "GET", PATH, []),  # no key
    ({"user_id": "u-1001"}, "GET", PATH, [(b"authorization", b"Bearer wrong-key-0000000000")]),
    ({"user_id": "u-1001"}, "GET", PATH, [(b"authorization", f"Basic {API_KEY}".encode())]),
    # Only the first of each header counts, as for the route (Starlette's Headers.get).
    ({"user_id": "u-1001"}, "GET", PATH, [(b"x-api-key", b""),
                                          (b"x-api-key", API_KEY.encode())]),
    ({"user_id": "u-1001"}, "GET", PATH, [(b"authorization", b"Basic x"), *KEY]),
    ({"user_id": "u 1001"}, "GET", PATH, None),  # invalid parameters
    ({"user_id": "u-1001", "k": 0}, "GET", PATH, None),
    ({"user_id": "u-1001", "k": "1.5"}, "GET", PATH, None),
    ({"user_id": "u-1001", "provider_id": ""}, "GET", PATH, None),
    ({"k": 3}, "GET", PATH, None),
    ({"user_id": "u-1001"}, "HEAD", PATH, None),  # other methods and paths
    ({"user_id": "u-1001"}, "POST", PATH, None),
    ({"user_id": "u-1001"}, "GET", PATH + "/", None),
    ({"user_id": "u-1001"}, "GET", "/v1/recommendations/query", None),
])
def test_other_requests_go_on_to_the_route(client: TestClient, query: dict[str, Any],
                                          method: str, path: str,
                                          headers: list[tuple[bytes, bytes]] | None) -> None:
    answered, sent, _, untouched = _call(client, _scope(client, query, method=method,
                                                        path=path, headers=headers),
                                         route=False)
    assert (answered, sent, untouched) == (False, [], True)


@pytest.mark.parametrize("query", [
    {"text": "宝宝辅食先加什么"},
    {"text": "米粉要选高铁的吗，宝宝六个月", "k": 3, "provider_id": "sh-01"},
    {"text": "有没有育儿课程", "kind": "course", "user_id": "u-1001", "min_confidence": 0.1},
    {"text": "今天天气不错"},
])
def test_a_search_is_answered_as_the_route_does(client: TestClient,
                                                query: dict[str, Any]) -> None:
    body = json.dumps(query, ensure_ascii=False).encode()
    answered, fast, _, _ = _call(client, _post(client, body), route=False, body=body)
    assert answered
    routed, slow, _, _ = _call(client, _post(client, body), route=True, body=body)
    assert routed
    status, headers, answer = _response(fast)
    assert (status, headers[b"content-type"]) == (200, b"application/json")
    assert answer["strategy"] == "query"
    assert _response(slow) == (status, headers, answer)


BODY = json.dumps({"text": "米粉"}).encode()
LENGTH = [(b"content-length", str(len(BODY)).encode())]


@pytest.mark.parametrize(("body", "headers", "read"), [
    (BODY, [*JSON_TYPE, *LENGTH], False),  # no key
    (BODY, [*KEY, (b"content-type", b"text/plain"), *LENGTH], False),  # not JSON
    (BODY, [*KEY, (b"content-type", b"application/merge-patch+json"), *LENGTH], False),
    (BODY, [*KEY, *JSON_TYPE], False),  # no declared length (chunked)
    (BODY, [*KEY, *JSON_TYPE, (b"content-length", b"2000000")], False),  # over the cap
    (b"{", None, True),  # read, then handed on to the route
    (b'{"text": ""}', None, True),
    (b'{"text": "x", "surprise": 1}', None, True),
    (b'{"text": NaN}', None, True),
    (b"[" * 100_000, None, True),
])
def test_other_searches_go_on_to_the_route_with_their_body(
        client: TestClient, body: bytes, headers: list[tuple[bytes, bytes]] | None,
        read: bool) -> None:
    answered, sent, rest, untouched = _call(client, _post(client, body, headers=headers),
                                            route=False, body=body)
    # The route gets the body that was sent: untouched when the fast path did not read it,
    # handed on when it did.
    assert (answered, sent, rest, untouched) == (False, [], body, not read)


def test_the_route_refuses_the_searches_handed_on(client: TestClient) -> None:
    h = {"Authorization": f"Bearer {API_KEY}"}
    for body, loc in (({"text": ""}, ["body", "text"]), ({"text": "x", "k": 0}, ["body", "k"]),
                      ({"text": "x", "surprise": 1}, ["body", "surprise"])):
        r = client.post(QUERY, json=body, headers=h)
        assert r.status_code == 422
        assert r.json()["error"]["details"][0]["loc"] == loc
    r = client.post(QUERY, content=b"[" * 100_000, headers={**h, "content-type": JSON})
    assert r.status_code == 400  # FastAPI's answer to a body it cannot parse (too deep)
    assert client.post(QUERY, json={"text": "米粉"}).status_code == 401
    assert client.post(QUERY, content=b"x" * 2_000_000,
                       headers={**h, "content-type": JSON}).status_code == 413
    assert client.post(QUERY, json={"text": "米粉"}, headers=h).status_code == 200


@pytest.mark.parametrize("headers", [
    [(b"x-api-key", API_KEY.encode())],
    [(b"authorization", f"bearer {API_KEY}".encode())],
    [(b"x-api-key", b""), *KEY],  # an empty key header: the bearer token counts
])
def test_either_way_of_giving_the_key_is_answered(client: TestClient,
                                                  headers: list[tuple[bytes, bytes]]) -> None:
    answered, sent, _, _ = _call(client, _scope(client, {"user_id": "u-1001"},
                                                headers=headers), route=False)
    assert answered and _response(sent)[0] == 200


def test_the_route_still_refuses_what_the_fast_path_passes_on(client: TestClient) -> None:
    assert client.get(PATH, params={"user_id": "u-1001"}).status_code == 401
    r = client.get(PATH, params={"user_id": "u-1001", "k": 0},
                   headers={"X-API-Key": API_KEY})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["loc"] == ["query", "k"]
    assert client.get(PATH, params={"user_id": "u-1001"},
                      headers={"X-API-Key": API_KEY}).status_code == 200


def test_fast_path_answers_are_counted(client: TestClient, services: Services) -> None:
    for user in ("u-1001", "anon-1", "anon-2"):
        r = client.get(PATH, params={"user_id": user}, headers={"X-API-Key": API_KEY})
        assert r.status_code == 200
    assert client.get(PATH, params={"user_id": "u-1001"}).status_code == 401
    r = client.post(QUERY, json={"text": "宝宝辅食"}, headers={"X-API-Key": API_KEY})
    assert r.status_code == 200
    assert client.post(QUERY, json={"text": ""}, headers={"X-API-Key": API_KEY}
                       ).status_code == 422
    metrics = client.get("/metrics").text
    assert f'mingpian_http_requests_total{{route="{PATH}",status="200"}} 3.0' in metrics
    assert f'mingpian_http_requests_total{{route="{PATH}",status="401"}} 1.0' in metrics
    assert 'mingpian_events_total{kind="recommend_profile"} 1.0' in metrics
    assert 'mingpian_events_total{kind="recommend_global_popular"} 2.0' in metrics
    assert f'mingpian_http_requests_total{{route="{QUERY}",status="200"}} 1.0' in metrics
    assert f'mingpian_http_requests_total{{route="{QUERY}",status="422"}} 1.0' in metrics
    assert 'mingpian_events_total{kind="recommend_query"} 1.0' in metrics
    services.console.requests.flush()
    today = local_day(time.time(), services.settings.tz_offset_hours)
    assert services.store.counters(NS_DAILY).get(f"{today}|served") == 4
