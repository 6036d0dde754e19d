"""Settings from MINGPIAN_* environment variables or .env, built once (CONTRACTS §8)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cards.plan.config import PlanConfig

DEFAULT_SHARE_SECRET = "change-me-share-secret"


class WeChatSettings(BaseModel):
    """Official Account (公众号)."""

    token: SecretStr
    app_id: str = ""
    aes_key: SecretStr | None = None  # the 43-character EncodingAESKey; None = plaintext mode
    app_secret: SecretStr | None = None
    api_base: str = "https://api.weixin.qq.com"
    # WeChat sign-in on card pages (issue 15 point 2): with app_id and app_secret set, a card
    # opened inside WeChat goes once through snsapi_base OAuth on this base (tests: stand-in).
    oauth_base: str = "https://open.weixin.qq.com"
    card_signin: bool = True
    # plaintext | compatible | safe (issue 11, CONTRACTS §1); None = safe when an AES key is
    # set, else plaintext. In safe and compatible modes an unencrypted POST is refused.
    mode: Literal["plaintext", "compatible", "safe"] | None = None


class WeComSettings(BaseModel):
    """WeCom self-built app (企业微信自建应用) or AI bot."""

    corp_id: str
    token: SecretStr
    aes_key: SecretStr
    agent_id: str = ""
    secret: SecretStr | None = None
    api_base: str = "https://qyapi.weixin.qq.com"
    robot_webhook_key: SecretStr | None = None  # group-robot webhook key, optional
    bot_names: list[str] = Field(default_factory=lambda: ["名片助手"])
    # The sidebar's JS-SDK (issue 15 point 4) and the OAuth that names the salesperson.
    jssdk_url: str = "https://wwcdn.weixin.qq.com/node/open/js/wecom-jssdk-2.0.2.js"
    oauth_base: str = "https://open.weixin.qq.com"


class TagSyncSettings(BaseModel):
    """Tags back into WeCom (issue 15 point 3): MINGPIAN_TAGS__*."""

    enabled: bool = True  # the worker job runs when WeCom has a secret
    group_name: str = Field(default="mingpian 兴趣", max_length=30)
    top_n: int = 3  # interests written as tags per contact
    min_weight: float = 0.5  # weaker interests are not written
    min_interval_s: int = 86_400  # a contact's tags change at most this often
    interval_s: float = 3600.0  # how often the worker job runs
    # WeCom allows 10,000 calls a minute per API per corp (WECOM.md §3, D90454): stay well under.
    calls_per_minute: int = 3000
    batch: int = 100  # contacts per batch


class WeComAibotSettings(BaseModel):
    """WeCom AI bot (智能机器人): HTTP callback and/or long connection (WECOM.md §1)."""

    # HTTP callback (GET/POST /wecom/aibot/callback): the bot's Token and EncodingAESKey.
    token: SecretStr | None = None
    aes_key: SecretStr | None = None
    # Long connection (`mingpian aibot connect`): the bot id and secret.
    bot_id: str = ""
    secret: SecretStr | None = None
    ws_url: str = "wss://openws.work.weixin.qq.com"
    # How an answer to an HTTP callback goes out: the passive stream reply, or one POST to
    # the message's response_url from the worker.
    reply_mode: Literal["stream", "response_url"] = "response_url"
    bot_names: list[str] = Field(default_factory=lambda: ["名片助手"])


class ArchiveSettings(BaseModel):
    """WeCom chat archive (会话内容存档, WECOM.md §2): MINGPIAN_ARCHIVE__*."""

    sdk_path: Path  # Tencent's libWeWorkFinanceSdk_C.so
    corp_id: str
    secret: SecretStr  # the 会话内容存档 Secret (also the token for its HTTP helpers)
    # {"<publickey_ver>": "<PEM file>"}: the RSA private key of each public-key version.
    private_keys: dict[str, Path] = Field(default_factory=dict)
    rooms: list[str] = Field(default_factory=list)  # groups taken; empty = every group
    excluded_rooms: list[str] = Field(default_factory=list)  # groups never taken
    direct_chats: bool = False  # also one-to-one chats
    page_size: int = Field(default=1000, ge=1, le=1000)  # GetChatData limit (≤ 1000)
    timeout_s: int = 5  # "建议超时时间设置为5s" (WECOM.md §2.1)
    proxy: str = ""  # e.g. socks5://10.0.0.1:8081
    proxy_password: SecretStr | None = None  # user:pwd
    poll_interval_s: float = 30.0  # --follow: pull at least this often (msgaudit_notify wakes)
    min_call_interval_s: float = 0.1  # ≤ 600 GetChatData calls a minute (UNCONFIRMED limit)
    network_attempts: int = 8  # 10001 retries, jittered backoff
    retention_days: float = 5.0  # WeCom serves about this many days (UNCONFIRMED)
    dead_letter_days: int = 30  # undecryptable records are kept this long
    # Ask msgaudit/check_single_agree for the external senders (cached agree_cache_s).
    check_agree: bool = False
    agree_cache_s: int = 3600
    room_names: bool = True  # ask msgaudit/groupchat/get for group names
    api_base: str | None = None  # None = MINGPIAN_WECOM__API_BASE or qyapi.weixin.qq.com


class ReplySettings(BaseModel):
    """When the bot answers in a group."""

    enabled: bool = True
    min_interval_s: int = 600  # per group: one reply per 10 minutes
    quiet_start_hour: int = 22  # local hour (Asia/Shanghai), inclusive
    quiet_end_hour: int = 8  # exclusive
    confidence: float = 0.55  # unprompted answers: the best item's calibrated confidence
    max_items: int = 3
    card_url: str | None = None  # the salesperson's card link appended to replies; None = none
    bot_user_ids: list[str] = Field(default_factory=list)  # senders that are bots: never answered


class Settings(BaseSettings):
    """Every setting of the service."""

    model_config = SettingsConfigDict(
        env_file=".env", env_prefix="MINGPIAN_", env_nested_delimiter="__",
        env_ignore_empty=True, extra="ignore",
    )

    data_dir: Path = Path("data")
    redis_url: str | None = None
    api_keys: str = ""  # comma-separated
    share_secret: SecretStr = SecretStr(DEFAULT_SHARE_SECRET)
    # Earlier share secrets, comma-separated: codes made with them still verify, so printed
    # QR codes survive a rotation (CONTRACTS §8).
    share_secrets_old: SecretStr | None = None
    # HMAC key of the ledger's chain head (issue 12); required outside demo mode.
    ledger_key: SecretStr | None = None
    # true lets serve/worker start with the documented default secrets and short API keys
    # (make run, make demo, mingpian demo); otherwise they refuse to start (issue 11).
    demo: bool = False
    public_base_url: str = "http://127.0.0.1:8000"
    embedder: str = "use"
    # BLAS threads of the embedder; None = one per core. On cores shared with other work,
    # 1 embeds 4x faster than 2 (OpenBLAS threads wait on each other): see BENCHMARKS.md.
    embedder_threads: int | None = None
    # `mingpian worker` (and embedded `serve`'s consumer, off the serving GIL: issue 17) runs
    # the model in this many child processes of one BLAS thread each
    # (embedder_threads, if set), which embed side by side; 0 = in the worker itself. Two
    # single-threaded processes embed faster on 2 cores than one with two threads
    # (BENCHMARKS.md, issue 3).
    worker_embedder_processes: int = 2
    wechat: WeChatSettings | None = None
    wecom: WeComSettings | None = None
    wecom_aibot: WeComAibotSettings | None = None  # MINGPIAN_WECOM_AIBOT__*
    archive: ArchiveSettings | None = None  # MINGPIAN_ARCHIVE__* (chat archive)
    plan: PlanConfig = PlanConfig()  # MINGPIAN_PLAN__*; the engine clamps it (config.py)
    reply: ReplySettings = ReplySettings()
    tags: TagSyncSettings = TagSyncSettings()  # MINGPIAN_TAGS__*

    dedup_ttl_days: int = 7
    retain_messages: bool = False
    profile_half_life_days: float = 30.0
    # Free-text answers mingpian is not confident of (chit-chat, off-topic): no items at all
    # when true; otherwise items with their low confidence and "confident": false (issue 16).
    recommend_empty_when_unsure: bool = False
    # Rankings of this many recent searches kept per process (a mall's search box repeats
    # its searches), each only while the catalog snapshot it was ranked on serves; stock,
    # price and purchases are checked again on every request. 0 = none (issue 17).
    recommend_search_cache: int = Field(default=1024, ge=0)  # ~12 KiB each
    taxonomy_path: Path | None = None  # replaces the shipped nlp/dicts/taxonomy.json
    extra_taxonomy_path: Path | None = None  # adds tags (or keywords to same-named tags)
    taxonomy_examples_path: Path | None = None  # example sentences; None = the shipped file
    max_body_bytes: int = 1024 * 1024
    # WeChat/WeCom callbacks are a few KiB: their own, much smaller cap (CONTRACTS §1).
    max_callback_bytes: int = 64 * 1024
    max_callback_elements: int = 256  # XML elements (or JSON values) in one callback body
    # Public pages (/c, /s, /r, posters): per-client limit in `limits` notation (§6).
    public_rate_limit: str = "120/minute"
    # Comma-separated addresses/CIDRs of reverse proxies whose X-Forwarded-For is believed;
    # empty = never believe it.
    trusted_proxies: str = ""
    # Who may read /metrics and /docs (/openapi.json): comma-separated CIDRs, or "off".
    ops_networks: str = "127.0.0.0/8,::1/128"
    visit_retention_days: int = 180  # card visits older than this are purged
    viewer_token_max_ttl_s: int = 7 * 86_400  # POST /v1/viewer-tokens caps ttl_s at this
    purge_interval_s: float = 600.0  # how often expired keys and logs are purged
    queue_visibility_s: float = 30.0
    queue_max_attempts: int = 5
    worker_batch: int = 64
    embedded_worker: bool = True  # serve also consumes the queue in embedded (SQLite) mode
    # ... in a child `mingpian worker` process that serve starts, restarts and stops (issue
    # 17: acknowledgements share neither the consumer's GIL nor its event loop); false = a
    # thread inside the serving process.
    embedded_worker_process: bool = True
    # How far below serve's CPU priority (`nice`, 0–19) the embedded consumer's model
    # processes run: tagging a backlog can wait, a page view and an acknowledgement cannot
    # (issue 17). The consumer process itself keeps serve's (it takes the SQLite writer that
    # acknowledgements wait for). 0 = the same as serve.
    embedded_worker_nice: int = Field(default=10, ge=0, le=19)
    referral_policy: Literal["first", "window_days", "last"] = "first"
    referral_window_days: int = 30
    # Above this many items the index is approximate (IVF). Exact search reads every vector
    # for every query: ~3 ms a page view at 10k items here, ~35 ms at 100k (BENCHMARKS.md).
    exact_index_max: int = 10_000
    index_nprobe: int = 32  # IVF lists probed per query: recall@10 ≥ 0.97 at 100k–1M items
    # Open the persisted index mapped: serve, its consumer and `serve --workers N` share one
    # copy of its pages (a search costs the same CPU as in memory, issue 17); false reads it.
    index_mmap: bool = True
    index_poll_s: float = 0.5  # how often each process checks the catalog version
    tz_offset_hours: int = 8  # Asia/Shanghai, for quiet hours and "per visitor per day"
    poster_font: Path | None = None  # a CJK .ttf/.ttc/.otf for posters; None = find one
    # The console (/console, issue 18): how long a sign-in lasts, and sign-in attempts per
    # client (`limits` notation; ten wrong passwords in a row lock a name regardless).
    console_session_ttl_s: int = 8 * 3600
    console_login_rate_limit: str = "30/minute"
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one JSON object a log line

    @field_validator("redis_url")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v or None

    def api_key_list(self) -> list[str]:
        """Return the accepted API keys."""
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]


@lru_cache
def get_settings() -> Settings:
    """Return the process's settings (no module-level Settings(): imports work without .env)."""
    return Settings()
