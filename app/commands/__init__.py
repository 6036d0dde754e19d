"""CLI verbs beyond serve/worker, one module per domain; each exposes register(sub)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

# A parser's sub-verbs (argparse's class is generic only to type checkers, hence the string).
Verbs: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def verb_group(sub: Verbs, name: str, *, help: str,
               description: str | None = None, metavar: str = "VERB") -> Verbs:
    """Add `mingpian NAME SUBVERB …` and return the parser's sub-verbs (one required, read
    back as args.<name>_verb)."""
    group = sub.add_parser(name, help=help, description=description)
    return group.add_subparsers(dest=f"{name}_verb", required=True, metavar=metavar)


def add_verb(sub: Verbs, name: str, fn: Callable[..., int], *, help: str,
             description: str | None = None) -> argparse.ArgumentParser:
    """Add `… NAME` that runs fn(args, settings); return its parser for the arguments."""
    p = sub.add_parser(name, help=help, description=description)
    p.set_defaults(fn=fn)
    return p
