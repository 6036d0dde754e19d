"""Issue 11, point 7 (operators' half): /metrics and the OpenAPI docs answer only to the
ops networks; X-Forwarded-For counts only from a trusted proxy."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.types import Scope

from app.clientaddr import client_address, parse_address, parse_networks
from app.main import create_app
from app.secrets_check import impossible_settings
from app.settings import Settings
from tests.conftest import make_settings

OPS = ["/metrics", "/docs", "/openapi.json", "/redoc"]


def _settings(data_dir: Path, **overrides: object) -> Settings:
    return make_settings(data_dir, embedder="hash", **overrides)  # no model: not about it


def _status(settings: Settings, peer: str, path: str, xff: str | None = None) -> int:
    headers = {"X-Forwarded-For": xff} if xff is not None else {}
    with TestClient(create_app(settings), client=(peer, 50000)) as c:
        return c.get(path, headers=headers).status_code


@pytest.mark.parametrize("path", OPS)
def test_point7_metrics_only_to_ops_networks(tmp_path: Path, path: str) -> None:
    default = _settings(tmp_path / "a")  # ops_networks: loopback
    assert _status(default, "127.0.0.1", path) == 200
    assert _status(default, "::1", path) == 200
    assert _status(default, "203.0.113.5", path) == 404
    assert _status(default, "10.1.2.3", path) == 404
    # Not an IP address (TestClient's default peer, a Unix socket): never an operator.
    assert _status(default, "testclient", path) == 404
    # The rest of the service is untouched.
    assert _status(default, "203.0.113.5", "/healthz") == 200

    office = _settings(tmp_path / "b", ops_networks="10.0.0.0/8, 192.168.1.7")
    assert _status(office, "10.1.2.3", path) == 200
    assert _status(office, "192.168.1.7", path) == 200
    assert _status(office, "127.0.0.1", path) == 404

    off = _settings(tmp_path / "c", ops_networks="off")
    assert _status(off, "127.0.0.1", path) == 404


def test_point7_refusal_looks_like_a_missing_route(tmp_path: Path) -> None:
    with TestClient(create_app(_settings(tmp_path)), client=("203.0.113.5", 1)) as c:
        hidden, missing = c.get("/metrics"), c.get("/no-such-page")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json() == {"error": {"code": "not_found",
                                                         "message": "Not Found"}}


def test_point7_forwarded_for_only_from_trusted_proxies(tmp_path: Path) -> None:
    direct = _settings(tmp_path / "a")
    # An outsider writing X-Forwarded-For: 127.0.0.1 is still an outsider.
    assert _status(direct, "203.0.113.5", "/metrics", xff="127.0.0.1") == 404
    proxied = _settings(tmp_path / "b", trusted_proxies="127.0.0.1")
    # Behind our proxy on loopback: the proxy's own address no longer opens the door ...
    assert _status(proxied, "127.0.0.1", "/metrics", xff="203.0.113.5") == 404
    # ... a forged entry left of the real client's counts for nothing ...
    assert _status(proxied, "127.0.0.1", "/metrics", xff="127.0.0.1, 203.0.113.5") == 404
    # ... and an operator on the host, through the proxy, still gets in.
    assert _status(proxied, "127.0.0.1", "/metrics", xff="127.0.0.1") == 200


def _scope(peer: str | None, xff: str | None = None) -> Scope:
    headers = [(b"x-forwarded-for", xff.encode())] if xff is not None else []
    return {"type": "http", "client": (peer, 1) if peer else None, "headers": headers}


def test_point7_client_address() -> None:
    proxies = parse_networks("10.0.0.0/8,::1")
    assert client_address(_scope("203.0.113.5", "1.2.3.4"), proxies) == parse_address(
        "203.0.113.5")
    assert client_address(_scope("10.0.0.2", "1.2.3.4, 10.0.0.9"), proxies) == parse_address(
        "1.2.3.4")
    assert client_address(_scope("10.0.0.2", "9.9.9.9, 1.2.3.4"), proxies) == parse_address(
        "1.2.3.4")
    assert client_address(_scope("10.0.0.2", "garbage"), proxies) is None
    assert client_address(_scope("10.0.0.2"), proxies) == parse_address("10.0.0.2")
    assert client_address(_scope("::ffff:203.0.113.5"), proxies) == parse_address(
        "203.0.113.5")
    assert client_address(_scope("testclient"), proxies) is None
    assert client_address(_scope(None), proxies) is None


def test_point7_bad_networks_stop_startup(tmp_path: Path) -> None:
    bad = _settings(tmp_path, ops_networks="10.0.0.0/33", trusted_proxies="proxy.local")
    problems = impossible_settings(bad)
    assert any(p.startswith("MINGPIAN_OPS_NETWORKS") for p in problems)
    assert any(p.startswith("MINGPIAN_TRUSTED_PROXIES") for p in problems)
    with pytest.raises(ValueError, match="not an address or CIDR"):
        create_app(bad)
