"""CLI verbs of the WeCom chat archive (会话内容存档): `mingpian archive pull [--follow]`,
`status`, `dead-letters`, `retry-dead` (issue 14 points 4-5)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.commands import Verbs, add_verb, verb_group
from app.settings import ArchiveSettings, Settings
from app.signals import stop_on_signals

if TYPE_CHECKING:
    import httpx

    from app.services import Services
    from bot.archive.apply import Applier, ArchiveRules
    from bot.archive.pull import Puller
    from bot.archive.sdk import FinanceSdk
    from store import Store

log = logging.getLogger("mingpian.archive")

# The inbox queue (app.services.INBOX), named here so that pulling never imports the
# service's heavy modules (tests/bot/test_archive_cli.py checks they agree).
QUEUE = "inbox"
_MISSING = ("mingpian archive: set MINGPIAN_ARCHIVE__SDK_PATH, MINGPIAN_ARCHIVE__CORP_ID, "
            "MINGPIAN_ARCHIVE__SECRET and MINGPIAN_ARCHIVE__PRIVATE_KEYS "
            '(\'{"<publickey_ver>": "<PEM file>"}\')')


class LazyErasure:
    """The app's erasure (app/erasure.py) for the consent rules, building the services (and
    so loading the model) only when someone has to be erased."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.services: Services | None = None

    def __call__(self, user_id: str) -> None:
        """Erase the user from every domain."""
        from app.erasure import erase_user

        if self.services is None:
            from app.services import build_services

            self.services = build_services(self.settings, store=self.store)
        erase_user(self.services, user_id)

    def close(self) -> None:
        """Release the services (and the store) or just the store."""
        if self.services is not None:
            self.services.close()
        else:
            self.store.close()


def archive_rules(cfg: ArchiveSettings | None) -> ArchiveRules:
    """Return the archive's filters from its settings (defaults without them)."""
    from bot.archive.apply import ArchiveRules

    if cfg is None:
        return ArchiveRules()
    return ArchiveRules(rooms=frozenset(cfg.rooms), excluded_rooms=frozenset(cfg.excluded_rooms),
                        direct_chats=cfg.direct_chats, agree_cache_s=cfg.agree_cache_s)


def build_applier(settings: Settings, store: Store, *, erase: Callable[[str], None],
                  http: httpx.Client | None) -> Applier:
    """Return the archive's applier; its HTTP helpers (consent check, group names) use the
    archive secret's token when an HTTP client is given and the settings ask for them."""
    from bot.archive.api import ArchiveApi
    from bot.archive.apply import Applier
    from bot.platform import WeComClient

    cfg = settings.archive
    api = None
    if cfg is not None and http is not None and (cfg.check_agree or cfg.room_names):
        base = cfg.api_base or (settings.wecom.api_base if settings.wecom is not None
                                else "https://qyapi.weixin.qq.com")
        api = ArchiveApi(WeComClient(store, http, api_base=base, corp_id=cfg.corp_id,
                                     secret=cfg.secret.get_secret_value(), agent_id="msgaudit"))
    return Applier(store, rules=archive_rules(cfg), erase=erase, api=api,
                   check_agree=cfg is not None and cfg.check_agree)


def build_puller(settings: Settings, store: Store, applier: Applier
                 ) -> tuple[Puller, FinanceSdk]:
    """Return the puller over a fresh SDK handle (Init done; SdkError when it fails)."""
    from bot.archive.pull import PullConfig, Puller
    from bot.archive.sdk import FinanceSdk, PrivateKeys

    cfg = settings.archive
    if cfg is None:
        raise ValueError("no archive settings")
    sdk = FinanceSdk(cfg.sdk_path, corp_id=cfg.corp_id, secret=cfg.secret.get_secret_value(),
                     proxy=cfg.proxy, timeout_s=cfg.timeout_s,
                     proxy_password=cfg.proxy_password.get_secret_value()
                     if cfg.proxy_password else "")
    config = PullConfig(queue=QUEUE, cursor=f"archive:{cfg.corp_id}",
                        dedup_ttl_s=settings.dedup_ttl_days * 86_400, page_size=cfg.page_size,
                        timeout_s=cfg.timeout_s, network_attempts=cfg.network_attempts,
                        min_call_interval_s=cfg.min_call_interval_s,
                        retention_s=cfg.retention_days * 86_400,
                        dead_ttl_s=cfg.dead_letter_days * 86_400)
    keys = PrivateKeys.from_pem_files(cfg.private_keys)
    return Puller(store, source=sdk, keys=keys, applier=applier, config=config), sdk


def _open(settings: Settings) -> Store:
    from store import open_store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return open_store(redis_url=settings.redis_url, data_dir=settings.data_dir)


def _with_puller(settings: Settings, run: Callable[[Puller], int]) -> int:
    import httpx

    from bot.archive.sdk import SdkError

    if settings.archive is None:
        print(_MISSING, file=sys.stderr)
        return 2
    store = _open(settings)
    erase = LazyErasure(settings, store)
    http = httpx.Client(timeout=10.0)
    try:
        applier = build_applier(settings, store, erase=erase, http=http)
        try:
            puller, sdk = build_puller(settings, store, applier)
        except (OSError, ValueError, SdkError) as e:
            print(f"mingpian archive: {e}", file=sys.stderr)
            return 2
        try:
            return run(puller)
        except SdkError as e:
            print(f"mingpian archive: {e}", file=sys.stderr)
            return 1
        finally:
            sdk.close()
    finally:
        http.close()
        erase.close()


def _pull(args: argparse.Namespace, settings: Settings) -> int:
    from bot.archive.pull import PullReport
    from bot.handlers import EVENTS_NS

    def summary(r: PullReport) -> str:
        media = sum(v for k, v in r.counts.items() if k.startswith("media:"))
        return (f"{r.records} records in {r.pages} pages: {r.queued} queued, {r.duplicates} "
                f"already queued, {media} media skipped, {r.dead} dead-lettered; seq {r.seq}")

    def run(puller: Puller) -> int:
        stop = threading.Event()
        stop_on_signals(stop)
        if not args.follow:
            print(summary(puller.pull(stop=stop, max_pages=args.max_pages)))
            return 0
        cfg = settings.archive
        assert cfg is not None  # checked by _with_puller
        store = puller.store
        # A msgaudit_notify callback is counted once by the worker (bot/handlers.py): a new
        # count wakes the follower before its next poll.
        puller.follow(stop, wake=lambda: store.counters(EVENTS_NS).get("msgaudit_notify", 0),
                      poll_interval_s=cfg.poll_interval_s,
                      on_report=lambda r: log.info("archive pull: %s", summary(r)))
        return 0

    return _with_puller(settings, run)


def _status(_args: argparse.Namespace, settings: Settings) -> int:  # the Command signature
    from bot.archive.apply import room_names
    from bot.archive.pull import DEAD_NS

    if settings.archive is None:
        print(_MISSING, file=sys.stderr)
        return 2
    store = _open(settings)
    try:
        cur = store.get_cursor(QUEUE, f"archive:{settings.archive.corp_id}") or {}
        names = room_names(store)
        print(json.dumps({"cursor": cur, "dead_letters": store.count(DEAD_NS),
                          "queue_depth": store.queue_depth(QUEUE), "rooms": names},
                         ensure_ascii=False, indent=2))
    finally:
        store.close()
    return 0


def _dead(args: argparse.Namespace, settings: Settings) -> int:
    def run(puller: Puller) -> int:
        for d in puller.dead_letters(limit=args.limit):
            rec = d.get("record") or {}
            print(json.dumps({"seq": rec.get("seq"), "msgid": rec.get("msgid"),
                              "publickey_ver": rec.get("publickey_ver"), "code": d.get("code"),
                              "error": d.get("error")}, ensure_ascii=False))
        return 0

    return _with_puller(settings, run)


def _retry_dead(_args: argparse.Namespace, settings: Settings) -> int:
    def run(puller: Puller) -> int:
        done, still = puller.retry_dead()
        print(f"{done} dead letters decrypted and queued, {still} still undecryptable")
        return 0

    return _with_puller(settings, run)


def register(sub: Verbs) -> None:
    """Add `mingpian archive …`."""
    group = verb_group(sub, "archive", help="the WeCom chat archive (会话内容存档)",
                       description="Pull the WeCom chat archive through Tencent's Finance SDK "
                       "(MINGPIAN_ARCHIVE__*) into the inbox queue; the worker tags it.")
    p = add_verb(group, "pull", _pull, help="pull new archive messages into the queue",
                 description="Pull every message after the saved seq, page by page. The seq "
                 "is saved in the same commit as the messages it covers: killed at any point, "
                 "the next run goes on without losing or repeating a message.")
    p.add_argument("--follow", action="store_true",
                   help="keep pulling: every MINGPIAN_ARCHIVE__POLL_INTERVAL_S, or at once "
                   "when a msgaudit_notify callback arrives")
    p.add_argument("--max-pages", type=int, default=None, metavar="N",
                   help="stop after N pages (without --follow)")
    add_verb(group, "status", _status, help="the cursor, counts, dead letters and group names")
    d = add_verb(group, "dead-letters", _dead, help="list records that could not be decrypted")
    d.add_argument("--limit", type=int, default=100, metavar="N")
    add_verb(group, "retry-dead", _retry_dead,
             help="decrypt the dead letters again (after adding a private key) and queue them")
