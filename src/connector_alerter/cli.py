"""``centaure silence add|list|remove``: silences of notifications, stored in SQL.

``add`` needs at least one matcher (``--host``, ``--name``, ``--device-type``;
globs), optionally ``--severity`` (``major``, ``major,minor`` or ``>=major``),
a duration (``--for 2h``) and a ``--comment``. ``remove ID`` ends a silence
now: the alerter then tells the alarms it hid that are still active, and the
recoveries of those that cleared under it (if the route sends recoveries).
The alerter's tables are created (or upgraded) here if needed, so that a
silence can be set before centaure-alerter first starts.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone

__all__ = ["add_silence_arguments", "silence_command"]


def add_silence_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``centaure silence``."""
    parser.add_argument("action", choices=("add", "list", "remove"),
                        help="add a silence, list them, or remove (end) one")
    parser.add_argument("id", nargs="?", help="remove: the silence's id (see 'list')")
    parser.add_argument("--host", help="add: host name or glob (r1, core-*)")
    parser.add_argument("--name", help="add: alarm name or glob (linkDown, bat*)")
    parser.add_argument("--device-type", dest="device_type",
                        help="add: inventory device type or glob (router)")
    parser.add_argument("--severity", help="add: major, 'major,minor' or '>=major'")
    parser.add_argument("--for", dest="duration", help="add: how long (30m, 2h, 1d)")
    parser.add_argument("--comment", help="add: why (shown in the delivery ledger)")
    parser.add_argument("--user", help="add: who sets it (default: the login name)")
    parser.add_argument("--all", action="store_true", help="list: expired silences too")
    parser.add_argument("--json", action="store_true", help="list: one JSON array")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def silence_command(settings, args) -> int:
    """Run ``centaure silence``; returns the exit code."""
    import sqlalchemy as sa

    from centaure_shared.sql import private_sqlite
    from connector.settings import mask_url

    from . import migrate, silences
    from .routes import parse_duration

    url = settings.database.url.reveal()
    prefix = settings.section("alerter").table_prefix

    def fail(text: str) -> int:
        print(f"centaure silence: {text}", file=sys.stderr)
        return 1

    if args.action == "add":
        if args.id:
            return fail("add takes no ID (did you mean 'remove ID'?)")
        if not (args.host or args.name or args.device_type):
            return fail("add needs --host, --name or --device-type (globs; '*' for all)")
        if not args.duration:
            return fail("add needs --for DURATION (e.g. 2h)")
        if not args.comment:
            return fail("add needs --comment TEXT (why)")
        try:
            duration = parse_duration(args.duration)
            if duration <= 0:
                raise ValueError("a silence needs a positive duration")
            silences.parse_severity(args.severity)
        except ValueError as e:
            return fail(str(e))
    elif args.action == "remove":
        if not args.id or not args.id.isdigit():
            return fail("remove needs the ID of a silence (see 'centaure silence list')")
    elif args.id:
        return fail("list takes no ID")
    engine = private_sqlite(sa.create_engine(url))
    try:
        migrate.upgrade(engine, prefix)
        now = time.time()
        if args.action == "add":
            s = silences.add(engine, prefix, duration=duration, comment=args.comment,
                             host=args.host, name=args.name, device_type=args.device_type,
                             severity=args.severity, created_by=args.user or getpass.getuser(),
                             now=now)
            print(f"silence {s.id} ({s.describe()}) until {_iso(s.ends)} UTC")
            return 0
        if args.action == "remove":
            if not silences.remove(engine, prefix, int(args.id), now=now):
                return fail(f"no active silence {args.id} (see 'centaure silence list')")
            print(f"silence {args.id} ended; the alarms it hid are notified now")
            return 0
        rows = silences.list_(engine, prefix, now=now, include_expired=args.all)
    except (sa.exc.SQLAlchemyError, migrate.SchemaOutOfDate) as e:
        text = str(getattr(e, "orig", None) or e).splitlines()[0]
        return fail(f"{mask_url(url)}: {text}")
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps([{"id": s.id, "host": s.host, "name": s.name,
                           "device_type": s.device_type,
                           "severity": list(s.severity) if s.severity else None,
                           "starts": s.starts, "ends": s.ends, "comment": s.comment,
                           "created_by": s.created_by, "active": s.active(now)}
                          for s in rows], indent=1))
        return 0
    if not rows:
        print("no silences" if args.all else "no active silences")
        return 0
    head = ("ID", "MATCHES", "STARTS", "ENDS", "BY", "COMMENT")
    lines = [head] + [(str(s.id), s.describe(), _iso(s.starts),
                       _iso(s.ends) + ("" if s.active(now) else " (ended)"), s.created_by,
                       s.comment[:60]) for s in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                    for line in lines))
    return 0


def add_commands(sub: argparse._SubParsersAction, with_config: Callable) -> dict[str, Callable]:
    """``centaure silence`` and ``centaure rules``: their parsers, and their handlers by name."""
    from .rules_cli import add_rules_arguments, rules_command

    add_silence_arguments(with_config(sub.add_parser("silence", help="add, list or remove silences")))
    add_rules_arguments(with_config(sub.add_parser(
        "rules", help="validate the alerter's threshold rules")))
    return {"silence": silence_command, "rules": rules_command}
