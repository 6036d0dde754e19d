"""CLI verbs of the demo domain."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this domain's verbs to the parser."""
