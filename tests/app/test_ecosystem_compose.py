"""Issue 13: docker-compose.yml (Redis with AOF, two serve, two worker, secrets from .env).
No Docker engine here: the file's structure is checked instead."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SECRETS = ("MINGPIAN_SHARE_SECRET", "MINGPIAN_LEDGER_KEY", "MINGPIAN_API_KEYS")


def _env_example_names() -> set[str]:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    return set(re.findall(r"^(MINGPIAN_[A-Z0-9_]+)=", text, re.M))


def test_compose_text_names_real_settings() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert "--appendonly" in text and '"--appendfsync", "always"' in text
    # Every ${VAR} compose reads from .env is a name .env.example documents.
    interpolated = set(re.findall(r"\$\{(\w+)", text))
    assert interpolated == set(SECRETS)
    assert interpolated <= _env_example_names()
    # Every MINGPIAN_* name is a setting (nested ones by their prefix).
    fields = {f"MINGPIAN_{name.upper()}" for name in Settings.model_fields}
    for name in set(re.findall(r"MINGPIAN_[A-Z0-9_]+", text)):
        assert name.split("__")[0] in fields, name


def test_compose_services() -> None:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services: dict[str, dict[str, Any]] = doc["services"]
    assert set(services) == {"redis", "serve-1", "serve-2", "worker-1", "worker-2"}

    redis = services["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always"
    assert redis["volumes"] and redis["healthcheck"]["test"]

    from app.cli import build_parser

    parser = build_parser()
    host_ports = []
    for name in ("serve-1", "serve-2", "worker-1", "worker-2"):
        svc = services[name]
        assert svc["env_file"] == ".env"
        env = svc["environment"]
        assert env["MINGPIAN_REDIS_URL"].startswith("redis://redis:6379")
        for secret in SECRETS:
            assert env[secret].startswith(f"${{{secret}:?")  # required, from .env
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert svc["healthcheck"]["test"][0] == "CMD"
        assert svc["command"][0] == "mingpian"
        verb = name.split("-")[0]
        assert parser.parse_args(svc["command"][1:]).verb == verb  # a real CLI verb
        if verb == "serve":
            assert "http://127.0.0.1:8000/healthz" in svc["healthcheck"]["test"]
            host_ports += [p.rsplit(":", 1)[0] for p in svc["ports"]]
        else:
            assert "ports" not in svc  # a worker has no HTTP port to check
    assert len(set(host_ports)) == 2
    assert set(doc["volumes"]) >= {v.split(":")[0] for s in services.values()
                                   for v in s.get("volumes", [])}
