"""CLI verbs of the cards domain: `mingpian audit verify|head`, `mingpian ledger rebuild|apply`."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from app.commands import Verbs, add_verb, verb_group
from app.settings import Settings

if TYPE_CHECKING:
    from app.services import Services
    from cards.orders import PlanLedger


def _ledger(settings: Settings) -> tuple[Services, PlanLedger]:
    from app.services import build_services

    services = build_services(settings)
    return services, services.cards.ledger


_DEMO_KEY_NOTE = ("note: MINGPIAN_LEDGER_KEY is not set, so the head is signed with the "
                  "public demo key (cards/ledger.py DEMO_LEDGER_KEY): its tag proves nothing")


def _audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    services, ledger = _ledger(settings)
    try:
        result = ledger.verify(expect_head=args.expect_head)
        n = ledger.cursor().ledger
    finally:
        services.close()
    if settings.ledger_key is None:
        print(_DEMO_KEY_NOTE)
    if result.ok:
        anchored = ", anchored head found" if args.expect_head else ""
        print(f"ledger ok: {n} entries, hash chain intact, head tag valid, "
              f"beneficiary copies match{anchored}")
        return 0
    if result.first_bad_seq is None:
        print(f"ledger ALTERED: {result.reason}")
    else:
        print(f"ledger ALTERED: first bad entry is seq {result.first_bad_seq}: {result.reason}")
    return 1


def _audit_head(args: argparse.Namespace, settings: Settings) -> int:
    services, ledger = _ledger(settings)
    try:
        signed = ledger.sign_head() if args.sign else None
        head = ledger.head()
    finally:
        services.close()
    if settings.ledger_key is None:
        print(_DEMO_KEY_NOTE)
    if signed is not None and not signed.ok:
        print(f"not signed: first bad entry is seq {signed.first_bad_seq}: {signed.reason}")
        return 1
    # One line of key=value pairs, easy to paste into a notary, a ticket or a chat with audit.
    print(f"entries={head.count} head={head.head} tag={head.tag or '-'} alg=hmac-sha256")
    if not head.valid:
        print("head tag INVALID: the head was rewound or rewritten, or the key differs "
              "(see `mingpian audit verify`; `audit head --sign` re-signs a genuine head)")
        return 1
    return 0


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


def _ledger_apply(_: argparse.Namespace, settings: Settings) -> int:
    services, ledger = _ledger(settings)
    try:
        n = ledger.catch_up()
        fed = services.cards.feed_back()  # and to the recommender (issue 15 point 7)
    finally:
        services.close()
    print(f"applied {n} waiting events; fed {fed} back to the recommender")
    return 0


_VERIFY = ("Recompute every entry's hash from its content and the previous hash, check the "
           "head's HMAC tag (a cut tail) and every beneficiary's copies. Exit 0 when intact; "
           "else print the first edited, deleted or reordered entry and exit 1.")
_HEAD = ("Print the ledger's head (the last entry's hash), its HMAC-SHA256 tag under "
         "MINGPIAN_LEDGER_KEY and the entry count. Keep the line somewhere the store's writers "
         "cannot reach; `audit verify --expect-head HASH` checks it later. Exit 1 if the tag "
         "is invalid.")
_REBUILD = ("Replay every stored order event and binding into a fresh plan and compare entries "
            "and balances with the stored ledger. Exit 0 when identical, else print a diff and "
            "exit 1. --write appends correction entries (never edits) so balances match the "
            "replay, and replaces the referral graph with it.")


def register(sub: Verbs) -> None:
    """Add this domain's verbs to the parser."""
    audit = verb_group(sub, "audit", help="check the rewards ledger",
                       description="Audit the append-only, hash-chained rewards ledger.")
    v = add_verb(audit, "verify", _audit_verify, description=_VERIFY,
                 help="recompute the hash chain; name the first altered entry (exit 1)")
    v.add_argument("--expect-head", metavar="HASH", default=None,
                   help="a head hash anchored earlier (`audit head`): it must still be in the "
                   "chain")
    h = add_verb(audit, "head", _audit_head, description=_HEAD,
                 help="print the ledger's head, its HMAC tag and entry count, for anchoring "
                 "elsewhere")
    h.add_argument("--sign", action="store_true",
                   help="(re-)sign the recorded head after checking the chain up to it: for "
                   "a ledger written before the head was keyed, or after a key rotation")

    ledger = verb_group(sub, "ledger", help="rebuild or apply the rewards ledger",
                        description="Operate on the rewards ledger.")
    r = add_verb(ledger, "rebuild", _ledger_rebuild, description=_REBUILD,
                 help="replay the stored order events and bindings; compare with the stored "
                 "ledger")
    r.add_argument("--write", action="store_true", help="append correction entries")
    r.add_argument("--max-diffs", type=int, default=20, help="entries to print (20)")
    add_verb(ledger, "apply", _ledger_apply, description="Apply the backlog of accepted events.",
             help="apply order events accepted but not applied yet (after a crash)")
