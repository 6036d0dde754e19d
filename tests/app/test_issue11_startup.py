"""Issue 11, point 6: `serve` and `worker` refuse weak secrets unless MINGPIAN_DEMO=true,
checked through the real command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.secrets_check import weak_settings
from app.settings import DEFAULT_SHARE_SECRET
from tests.conftest import make_settings
from tests.serve import ServeProcess

STRONG = "s" * 32
STRONG_ENV = {"MINGPIAN_SHARE_SECRET": STRONG, "MINGPIAN_LEDGER_KEY": "l" * 32,
              "MINGPIAN_API_KEYS": "k" * 16, "MINGPIAN_EMBEDDER": "hash",
              "MINGPIAN_REDIS_URL": "", "MINGPIAN_DEMO": "false"}


def _cli(verb: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `mingpian VERB` with only these MINGPIAN_* settings (none from the caller)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MINGPIAN_")}
    args = [sys.executable, "-m", "app.cli", verb]
    if verb == "serve":
        args += ["--port", "1"]  # never reached when refused; port 1 would fail anyway
    return subprocess.run(args, cwd=cwd, env=base | {"MINGPIAN_DATA_DIR": str(cwd / "data")}
                          | env, capture_output=True, text=True, timeout=60, check=False)


WEAK: dict[str, tuple[dict[str, str], str]] = {
    "unset share secret": ({"MINGPIAN_SHARE_SECRET": ""}, "MINGPIAN_SHARE_SECRET is unset"),
    "default share secret": ({"MINGPIAN_SHARE_SECRET": DEFAULT_SHARE_SECRET},
                             "MINGPIAN_SHARE_SECRET is unset or the documented default"),
    "5-character share secret": ({"MINGPIAN_SHARE_SECRET": "abcde"},
                                 "MINGPIAN_SHARE_SECRET is 5 bytes"),
    "31-byte share secret": ({"MINGPIAN_SHARE_SECRET": "x" * 31},
                             "MINGPIAN_SHARE_SECRET is 31 bytes"),
    "7-character API key": ({"MINGPIAN_API_KEYS": "k" * 16 + ",abcdefg"},
                            "MINGPIAN_API_KEYS key 2 is 7 characters"),
    "unset ledger key": ({"MINGPIAN_LEDGER_KEY": ""}, "MINGPIAN_LEDGER_KEY is unset"),
    "short ledger key": ({"MINGPIAN_LEDGER_KEY": "short"}, "MINGPIAN_LEDGER_KEY is 5 bytes"),
    "short old share secret": ({"MINGPIAN_SHARE_SECRETS_OLD": "o" * 32 + ",old"},
                               "MINGPIAN_SHARE_SECRETS_OLD entry 2 is 3 bytes"),
}


@pytest.mark.parametrize("case", list(WEAK))
def test_point6_serve_refuses_default_share_secret(tmp_path: Path, case: str) -> None:
    override, message = WEAK[case]
    for verb in ("serve", "worker"):
        done = _cli(verb, STRONG_ENV | override, tmp_path)
        assert done.returncode != 0, (verb, done.stdout, done.stderr)
        assert message in done.stderr, (verb, done.stderr)
        # The secret itself is never printed.
        for value in override.values():
            if len(value) > 3:
                assert value not in done.stderr.replace(message, "")


def test_point6_bare_environment_names_every_weak_setting(tmp_path: Path) -> None:
    done = _cli("serve", {}, tmp_path)
    assert done.returncode != 0
    assert "MINGPIAN_SHARE_SECRET" in done.stderr and "MINGPIAN_LEDGER_KEY" in done.stderr


def test_point6_demo_mode_allows_weak_secrets(tmp_path: Path) -> None:
    assert weak_settings(make_settings(tmp_path, demo=True)) == []
    assert weak_settings(make_settings(tmp_path, share_secret=STRONG, ledger_key=STRONG,
                                       api_keys="k" * 16)) == []
    # The documented defaults under MINGPIAN_DEMO=true (make run, mingpian demo) serve.
    serve = ServeProcess({"MINGPIAN_DEMO": "true", "MINGPIAN_EMBEDDER": "hash",
                          "MINGPIAN_SHARE_SECRET": "", "MINGPIAN_API_KEYS": "dev-key",
                          "MINGPIAN_REDIS_URL": ""}, workdir=tmp_path / "demo")
    try:
        serve.wait_ready()
    finally:
        serve.stop()


def test_point6_strong_secrets_serve(tmp_path: Path) -> None:
    serve = ServeProcess(STRONG_ENV, workdir=tmp_path)
    try:
        serve.wait_ready()
        assert httpx.get(serve.url + "/v1/users/nobody/profile",
                         headers={"X-API-Key": "k" * 16}).status_code == 404
    finally:
        serve.stop()
