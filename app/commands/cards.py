"""CLI verbs of the cards domain: `mingpian audit verify`, `mingpian ledger rebuild|apply`."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from app.settings import Settings

if TYPE_CHECKING:
    from app.services import Services
    from cards.orders import PlanLedger


def _ledger(settings: Settings) -> tuple[Services, PlanLedger]:
    from app.services import build_services

    services = build_services(settings)
    assert services.cards is not None
    return services, services.cards.ledger


def _audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    services, ledger = _ledger(settings)
    try:
        result = ledger.verify()
        n = ledger.cursor().ledger
    finally:
        services.close()
    if result.ok:
        print(f"ledger ok: {n} entries, hash chain intact")
        return 0
    print(f"ledger ALTERED: first bad entry is seq {result.first_bad_seq}: {result.reason}")
    return 1


def _ledger_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    services, ledger = _ledger(settings)
    try:
        report = ledger.rebuild(write=args.write)
        names = ledger.names.user_ids(list(report.balance_diffs))
    finally:
        services.close()
    print(f"replayed {report.events} events: {report.rebuilt_entries} entries "
          f"(stored: {report.stored_entries})")
    if report.identical:
        print("rebuilt ledger and balances are identical to the stored ones")
        return 0
    for seq, stored, rebuilt in report.entry_diffs[: args.max_diffs]:
        print(f"entry {seq}:")
        print(f"  - stored:  {json.dumps(stored, ensure_ascii=False, sort_keys=True)}")
        print(f"  + rebuilt: {json.dumps(rebuilt, ensure_ascii=False, sort_keys=True)}")
    if len(report.entry_diffs) > args.max_diffs:
        print(f"... and {len(report.entry_diffs) - args.max_diffs} more differing entries")
    for name, (before, after) in report.balance_diffs.items():
        who = names.get(name, name)
        print(f"balance of {who}: stored {before} != rebuilt {after}")
    if args.write:
        print(f"wrote {len(report.corrections)} correction entries and the rebuilt graph")
        return 0
    print("differences found (run with --write to append correction entries)")
    return 1


def _ledger_apply(args: argparse.Namespace, settings: Settings) -> int:
    services, ledger = _ledger(settings)
    try:
        n = ledger.catch_up()
    finally:
        services.close()
    print(f"applied {n} waiting events")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this domain's verbs to the parser."""
    audit = sub.add_parser("audit", help="check the rewards ledger",
                           description="Audit the append-only, hash-chained rewards ledger.")
    audit_sub = audit.add_subparsers(dest="audit_verb", required=True, metavar="VERB")
    v = audit_sub.add_parser("verify", help="recompute the hash chain; name the first "
                             "altered entry (exit 1)",
                             description="Recompute every entry's hash from its content and "
                             "the previous hash. Exit 0 when intact; else print the first "
                             "edited, deleted or reordered entry and exit 1.")
    v.set_defaults(fn=_audit_verify)

    ledger = sub.add_parser("ledger", help="rebuild or apply the rewards ledger",
                            description="Operate on the rewards ledger.")
    ledger_sub = ledger.add_subparsers(dest="ledger_verb", required=True, metavar="VERB")
    r = ledger_sub.add_parser("rebuild", help="replay the stored order events and bindings; "
                              "compare with the stored ledger",
                              description="Replay every stored order event and binding into "
                              "a fresh plan and compare entries and balances with the stored "
                              "ledger. Exit 0 when identical, else print a diff and exit 1. "
                              "--write appends correction entries (never edits) so balances "
                              "match the replay, and replaces the referral graph with it.")
    r.add_argument("--write", action="store_true", help="append correction entries")
    r.add_argument("--max-diffs", type=int, default=20, help="entries to print (20)")
    r.set_defaults(fn=_ledger_rebuild)
    a = ledger_sub.add_parser("apply", help="apply order events accepted but not applied "
                              "yet (after a crash)",
                              description="Apply the backlog of accepted events.")
    a.set_defaults(fn=_ledger_apply)
