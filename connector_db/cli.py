"""``centaure query``: samples, events and alarms read back from the database."""

from __future__ import annotations

import argparse


def add_query_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``centaure query`` (placeholder until the query API lands)."""
    parser.add_argument("host", nargs="?")


def query_command(settings, args) -> int:
    """Run ``centaure query``."""
    raise SystemExit("centaure query: not available yet")
