"""The app skeleton: health, metrics, docs, auth, error bodies, body limit."""

from __future__ import annotations

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from app.deps import ApiKey
from app.main import MingpianApp, create_app
from app.settings import Settings
from models.errors import ConflictError
from tests.conftest import API_KEY


@pytest.fixture
def app(settings: Settings) -> MingpianApp:
    """The app, its services built by the lifespan, with two probe routes behind the key."""
    app = create_app(settings)
    probe = APIRouter(prefix="/v1", dependencies=[ApiKey])

    @probe.get("/probe")
    def _probe() -> dict[str, str]:
        return {"ok": "yes"}

    @probe.post("/conflict")
    def _conflict() -> None:
        raise ConflictError("already bound", details={"user_id": "u1"})

    app.include_router(probe)
    return app


def test_healthz_reports_the_store(client: TestClient, backend: str) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "store": backend}


def test_docs_and_openapi(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"].startswith("mingpian")


def test_metrics_is_prometheus_text(client: TestClient) -> None:
    client.get("/healthz")
    r = client.get("/metrics")
    assert r.status_code == 200
    assert 'mingpian_http_requests_total{route="/healthz",status="200"}' in r.text
    assert "mingpian_queue_depth" in r.text


def test_v1_needs_an_api_key(client: TestClient) -> None:
    r = client.get("/v1/probe")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert client.get("/v1/probe", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/v1/probe", headers={"X-API-Key": API_KEY}).json() == {"ok": "yes"}
    ok = client.get("/v1/probe", headers={"Authorization": f"Bearer {API_KEY}"})
    assert ok.status_code == 200


def test_api_key_schemes_are_in_openapi(client: TestClient) -> None:
    """/docs offers an Authorize button for both ways of giving the key; the same 401 body
    as before answers a wrong Bearer token or a scheme that is not Bearer."""
    doc = client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key",
                                       "description": "one of MINGPIAN_API_KEYS"}
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    security = doc["paths"]["/v1/probe"]["get"]["security"]
    assert {"APIKeyHeader": []} in security and {"HTTPBearer": []} in security
    for headers in ({"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"},
                    {"Authorization": "Bearer "}):
        r = client.get("/v1/probe", headers=headers)
        assert r.status_code == 401
        assert r.json() == {"error": {"code": "unauthorized",
                                      "message": "missing or invalid API key"}}


def test_domain_errors_map_to_json(client: TestClient) -> None:
    r = client.post("/v1/conflict", headers={"X-API-Key": API_KEY})
    assert r.status_code == 409
    assert r.json() == {"error": {"code": "conflict", "message": "already bound",
                                  "details": {"user_id": "u1"}}}
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_body_over_one_mib_is_413(client: TestClient) -> None:
    r = client.post("/v1/probe", content=b"x" * (1024 * 1024 + 1),
                    headers={"X-API-Key": API_KEY})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    assert client.get("/healthz").status_code == 200


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINGPIAN_REDIS_URL", "")
    monkeypatch.setenv("MINGPIAN_API_KEYS", "a, b")
    monkeypatch.setenv("MINGPIAN_WECOM__CORP_ID", "wx5823bf96d3bd56c7")
    monkeypatch.setenv("MINGPIAN_WECOM__TOKEN", "QDG6eK")
    monkeypatch.setenv("MINGPIAN_WECOM__AES_KEY", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C")
    monkeypatch.setenv("MINGPIAN_PLAN__MAX_LEVELS", "5")
    s = Settings(_env_file=None)
    assert s.redis_url is None
    assert s.api_key_list() == ["a", "b"]
    assert s.wecom is not None and s.wecom.corp_id == "wx5823bf96d3bd56c7"
    assert s.wecom.token.get_secret_value() == "QDG6eK"
    assert s.plan.max_levels == 5  # the engine clamps it, not the settings
