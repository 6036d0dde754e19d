"""CLI verbs of the tag write-back (issue 15 point 3): `mingpian tags sync [--dry-run]`."""

from __future__ import annotations

import argparse
import sys

from app.commands import Verbs, add_verb, verb_group
from app.settings import Settings


def _sync(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import build_services
    from bot.tags import NotConfiguredError

    services = build_services(settings)
    try:
        sync = services.customers.tags
        ids: list[str] = list(args.contact or [])
        report = (sync.sync_contacts(ids, dry_run=args.dry_run) if ids
                  else sync.sync_all(dry_run=args.dry_run))
    except NotConfiguredError as e:
        print(f"mingpian tags sync: {e.message}", file=sys.stderr)
        return 2
    finally:
        services.close()
    for line in report.lines():
        print(line)
    return 1 if report.errors else 0


_HELP = ("Bring each consenting external contact's WeCom corporate tags (one tag group, "
         "MINGPIAN_TAGS__GROUP_NAME) in step with their top interests: tags are created on "
         "demand and marked for the follow-up salesperson; tags of contacts who withdrew "
         "consent or were erased are removed. --dry-run reads WeCom and prints what would "
         "change without writing anything. The worker runs the same job every "
         "MINGPIAN_TAGS__INTERVAL_S seconds.")


def register(sub: Verbs) -> None:
    """Add this domain's verbs to the parser."""
    tags = verb_group(sub, "tags", help="WeCom corporate tags from interests (write-back)")
    p = add_verb(tags, "sync", _sync, help="sync contacts' tags now", description=_HELP)
    p.add_argument("--dry-run", action="store_true",
                   help="read and report what would change; write nothing")
    p.add_argument("--contact", action="append", metavar="EXTERNAL_USERID",
                   help="only this contact (repeatable); default: every contact the job "
                   "looks after")
