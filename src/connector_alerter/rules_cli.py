"""``centaure rules check``: validate every threshold rule and say what each one watches."""

from __future__ import annotations

import argparse
import sys

from connector.settings import settings_dir

__all__ = ["add_rules_arguments", "rules_command"]


def add_rules_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``centaure rules``."""
    parser.add_argument("action", choices=("check",), help="check: validate and describe the rules")


def rules_command(settings, args) -> int:
    """Run ``centaure rules check``: 0 and one line per rule, or 1 and every problem."""
    from .rules import RulesError, describe, load_rules

    section = settings.section("alerter")
    base = settings_dir(settings)
    try:
        rules = load_rules(section, base)
    except RulesError as e:
        print(f"centaure rules check: {e}", file=sys.stderr)
        return 1
    for rule in rules:
        print(describe(rule))
    where = (section.rules if section.rules_source == "yaml"
             else f"table {section.rules_table}")
    print(f"{len(rules)} rule{'s' * (len(rules) != 1)} valid ({where})")
    return 0
