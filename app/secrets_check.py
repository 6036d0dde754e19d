"""What stops `serve` and `worker` before they start: weak secrets and impossible settings.

A share secret is the HMAC key of every share code and a ledger key guards the ledger's
chain head: the documented default, or one short enough to guess, lets anyone forge codes
or rewrite history. API keys guard /v1/*. Issue 11 found all three accepted silently, so
outside demo mode (MINGPIAN_DEMO=true, which `make run` and `mingpian demo` set) each is
checked here, once, before anything is built.
"""

from __future__ import annotations

from pydantic import SecretStr

from app.clientaddr import parse_networks
from app.settings import DEFAULT_SHARE_SECRET, Settings

MIN_SECRET_BYTES = 32  # 256 bits: what an HMAC-SHA256 key should carry
MIN_API_KEY_CHARS = 16


def _bytes(secret: SecretStr) -> int:
    return len(secret.get_secret_value().encode())


def weak_settings(settings: Settings) -> list[str]:
    """Return one line per weak secret (empty when all are strong, or in demo mode)."""
    if settings.demo:
        return []
    problems: list[str] = []
    share = settings.share_secret.get_secret_value()
    if share == DEFAULT_SHARE_SECRET:
        problems.append("MINGPIAN_SHARE_SECRET is unset or the documented default: set a "
                        f"random secret of at least {MIN_SECRET_BYTES} bytes")
    elif _bytes(settings.share_secret) < MIN_SECRET_BYTES:
        problems.append(f"MINGPIAN_SHARE_SECRET is {_bytes(settings.share_secret)} bytes: it "
                        f"must be at least {MIN_SECRET_BYTES}")
    if settings.share_secrets_old is not None:
        old = settings.share_secrets_old.get_secret_value().split(",")
        for i, entry in enumerate(e.strip() for e in old):
            if len(entry.encode()) < MIN_SECRET_BYTES:
                problems.append(f"MINGPIAN_SHARE_SECRETS_OLD entry {i + 1} is "
                                f"{len(entry.encode())} bytes: each must be at least "
                                f"{MIN_SECRET_BYTES}")
    for i, key in enumerate(settings.api_key_list()):
        if len(key) < MIN_API_KEY_CHARS:
            # The key itself is never printed: the message may end up in a shared log.
            problems.append(f"MINGPIAN_API_KEYS key {i + 1} is {len(key)} characters: each "
                            f"must be at least {MIN_API_KEY_CHARS}")
    if settings.ledger_key is None:
        problems.append("MINGPIAN_LEDGER_KEY is unset: set a random secret of at least "
                        f"{MIN_SECRET_BYTES} bytes")
    elif _bytes(settings.ledger_key) < MIN_SECRET_BYTES:
        problems.append(f"MINGPIAN_LEDGER_KEY is {_bytes(settings.ledger_key)} bytes: it must "
                        f"be at least {MIN_SECRET_BYTES}")
    return problems


def impossible_settings(settings: Settings) -> list[str]:
    """Return one line per setting that cannot work, demo mode or not."""
    problems: list[str] = []
    for name, spec in (("MINGPIAN_OPS_NETWORKS", settings.ops_networks),
                       ("MINGPIAN_TRUSTED_PROXIES", settings.trusted_proxies)):
        if name == "MINGPIAN_OPS_NETWORKS" and spec.strip().lower() == "off":
            continue
        try:
            parse_networks(spec)
        except ValueError as e:
            problems.append(f"{name}: {e}")
    wechat = settings.wechat
    if wechat is not None and wechat.mode in ("safe", "compatible") and wechat.aes_key is None:
        problems.append(f"MINGPIAN_WECHAT__MODE={wechat.mode} needs "
                        "MINGPIAN_WECHAT__AES_KEY (the EncodingAESKey)")
    return problems


def startup_problems(settings: Settings) -> list[str]:
    """Return every reason `serve` or `worker` must not start with these settings."""
    return impossible_settings(settings) + weak_settings(settings)
