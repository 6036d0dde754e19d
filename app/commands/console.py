"""CLI verbs of the console: `mingpian console-user add|disable|list` (CONTRACTS §8)."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from app.commands import Verbs, add_verb, verb_group
from app.settings import Settings
from models.errors import AppError

if TYPE_CHECKING:
    from app.console.auth import ConsoleUsers


def _read_password() -> str:
    """Read the password: asked twice on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise SystemExit("mingpian: the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


@contextmanager
def _accounts(settings: Settings) -> Iterator[ConsoleUsers]:
    """The console accounts in the configured store, which is closed on the way out."""
    from app.console.auth import ConsoleUsers
    from store import open_store

    store = open_store(redis_url=settings.redis_url, data_dir=settings.data_dir)
    try:
        yield ConsoleUsers(store)
    finally:
        store.close()


def _change(settings: Settings, change: Callable[[ConsoleUsers], str], *, failure: int) -> int:
    """Apply change to the accounts and print what it did; a refusal (AppError) is printed
    to stderr and returns failure."""
    with _accounts(settings) as users:
        try:
            done = change(users)
        except AppError as e:
            print(f"mingpian: {e.message}", file=sys.stderr)
            return failure
    print(done)
    return 0


def _add(args: argparse.Namespace, settings: Settings) -> int:
    password = _read_password()

    def add(users: ConsoleUsers) -> str:
        user = users.add(args.name, role=args.role, password=password)
        return f"console user {user.name} ({user.role}) saved"

    return _change(settings, add, failure=2)


def _disable(args: argparse.Namespace, settings: Settings) -> int:
    def disable(users: ConsoleUsers) -> str:
        users.disable(args.name)
        return f"console user {args.name} disabled (signed out everywhere)"

    return _change(settings, disable, failure=1)


def _list(_: argparse.Namespace, settings: Settings) -> int:
    with _accounts(settings) as accounts:
        users = accounts.list()
    for u in users:
        print(f"{u.name}\t{u.role}\t{'disabled' if u.disabled else 'active'}")
    return 0


def register(sub: Verbs) -> None:
    """Add this domain's verbs to the parser."""
    group = verb_group(sub, "console-user", help="manage accounts of the web console",
                       description="Accounts of the operator's console at /console.")
    a = add_verb(group, "add", _add, help="create or replace an account (password on stdin)",
                 description="Create an account, or replace its role and password (which "
                 "also enables it again). The password is read from stdin (asked twice on "
                 "a terminal), at least 8 characters, stored as an argon2id hash.")
    a.add_argument("name", help="account name (letters, digits, . _ @ -)")
    a.add_argument("--role", choices=["admin", "operator"], required=True,
                   help="admin: may change settings; operator: reads only")
    d = add_verb(group, "disable", _disable, help="disable an account (its sessions end)")
    d.add_argument("name")
    add_verb(group, "list", _list, help="list the accounts")
