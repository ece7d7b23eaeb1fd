"""``centaure demo``: a simulated fleet, every connector, SQLite, the embedded bus."""

from __future__ import annotations

import argparse


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``centaure demo`` (placeholder until the demo lands)."""


def demo_command(args) -> int:
    """Run ``centaure demo``."""
    raise SystemExit("centaure demo: not available yet")
