"""``centaure alarms``: the correlator's alarms as a table, and operators' commands on them.

Listing reads the correlator's own tables (its state, the source of truth)
in ``[database]``; ``ack``, ``unack``, ``clear`` and ``note`` publish an
``alarm_command`` on the bus, confirmed by the broker, for the correlator to
apply (it publishes the resulting ``alarm``). The command names the alarm's
host, read from the same tables: with ``[bus] partitions`` its routing key
carries the host's partition, so it reaches the node that owns the host.

Who acts is the broker user of ``[bus] url``: the command carries it as its
AMQP ``user-id``, which RabbitMQ checks, and the correlator records it when
that user is in ``[correlator] operators``. ``--user NAME`` (acting on behalf
of someone else) is for the trusted services of ``[correlator]
command_services`` only, and is refused for any other bus user.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

__all__ = ["add_alarms_arguments", "alarms_command", "list_alarms"]

ACTIONS = ("list", "ack", "unack", "clear", "note")
SEVERITIES = ("info", "warning", "minor", "major", "critical")


def add_alarms_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``centaure alarms``."""
    parser.add_argument("action", nargs="?", default="list", choices=ACTIONS,
                        help="list (default) the alarms, or act on one: ack, unack, clear, note")
    parser.add_argument("ref", nargs="?", help="the alarm's ref (for ack, unack, clear, note)")
    parser.add_argument("--host", help="list: only this host's alarms")
    parser.add_argument("--severity", choices=SEVERITIES,
                        help="list: only alarms of this severity or worse")
    parser.add_argument("--all", action="store_true",
                        help="list: cleared alarms too (those the correlator still keeps)")
    parser.add_argument("--json", action="store_true", help="list: one JSON array")
    parser.add_argument("--user", metavar="NAME",
                        help="act on behalf of NAME (ack, unack, clear, note): only for a bus "
                             "user in [correlator] command_services; without it the command "
                             "is recorded under the [bus] url user, the one that counts for "
                             "an operator")
    parser.add_argument("--note", help="a note (required for 'note', optional for the others)")


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def list_alarms(engine, prefix: str, host: str | None = None, severity: str | None = None,
                include_cleared: bool = False) -> list[dict]:
    """The correlator's alarms, most recently seen first (blocking: call from a thread)."""
    import sqlalchemy as sa

    from .schema import make_schema

    t = make_schema(prefix).alarms
    q = sa.select(t.c.ref, t.c.host, t.c.name, t.c.severity, t.c.active, t.c.count,
                  t.c.first_seen, t.c.last_seen, t.c.cleared_at, t.c.clear_reason,
                  t.c.acked_by, t.c.flapping, t.c.cause_ref, t.c.origin, t.c.message)
    if not include_cleared:
        q = q.where(t.c.active.is_(True))
    if host:
        q = q.where(t.c.host == host)
    if severity:
        q = q.where(t.c.severity.in_(SEVERITIES[SEVERITIES.index(severity):]))
    q = q.order_by(t.c.last_seen.desc())
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def _table(rows: list[dict]) -> str:
    head = ("REF", "HOST", "NAME", "SEVERITY", "STATE", "COUNT", "FIRST SEEN", "LAST SEEN",
            "ACKED BY", "FLAPPING", "CAUSE", "MESSAGE")
    lines = [head]
    for r in rows:
        lines.append((str(r["ref"]), r["host"], r["name"], r["severity"],
                       "active" if r["active"] else f"cleared ({r['clear_reason'] or '?'})",
                       str(r["count"]), _iso(r["first_seen"]), _iso(r["last_seen"]),
                       r["acked_by"] or "", "yes" if r["flapping"] else "",
                       str(r["cause_ref"] or ""), (r["message"] or "")[:60]))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in lines)


def _find(engine, prefix: str, ref: int) -> dict | None:
    import sqlalchemy as sa

    from .schema import make_schema

    t = make_schema(prefix).alarms
    with engine.connect() as conn:
        row = conn.execute(sa.select(t.c.host, t.c.active, t.c.name)
                           .where(t.c.ref == ref)).first()
    return None if row is None else dict(row._mapping)


def alarms_command(settings, args) -> int:
    """Run ``centaure alarms``; returns the exit code."""
    import sqlalchemy as sa

    from centaure_shared.sql import private_sqlite
    from connector.settings import mask_url

    url = settings.database.url.reveal()
    prefix = settings.section("correlator").table_prefix

    def fail(text: str) -> int:
        print(f"centaure alarms: {text}", file=sys.stderr)
        return 1

    if args.action == "list":
        if args.ref or args.user or args.note:
            return fail("list takes no REF, --user or --note (did you mean 'ack REF'?)")
    else:
        if args.host or args.severity or args.all or args.json:
            return fail(f"{args.action} takes REF (--host, --severity, --all and "
                        "--json are for listing)")
        if not args.ref or not args.ref.isdigit() or int(args.ref) >= 2**64:
            return fail(f"{args.action} needs the REF of an alarm (an unsigned 64-bit number, "
                        "as listed by 'centaure alarms')")
        if args.action == "note" and not args.note:
            return fail("note needs --note TEXT")
    engine = private_sqlite(sa.create_engine(url))
    try:
        if args.action == "list":
            rows = list_alarms(engine, prefix, args.host, args.severity, args.all)
        else:
            found = _find(engine, prefix, int(args.ref))
    except sa.exc.SQLAlchemyError as e:
        text = str(getattr(e, "orig", None) or e).splitlines()[0]
        if "no such table" in text or "doesn't exist" in text or "does not exist" in text:
            text = (f"no correlator tables with prefix {prefix!r}: start centaure-correlator "
                    "once (it creates them)")
        return fail(f"{mask_url(url)}: {text}")
    finally:
        engine.dispose()
    if args.action == "list":
        if args.json:
            print(json.dumps(rows, indent=1))
        elif not rows:
            print("no active alarms" if not args.all else "no alarms")
        else:
            print(_table(rows))
            active = sum(1 for r in rows if r["active"])
            print(f"{active} active alarm{'s' * (active != 1)}"
                  + (f", {len(rows) - active} cleared" if args.all else ""))
        return 0
    if found is None:
        return fail(f"no alarm with ref {args.ref} (see 'centaure alarms --all')")
    if args.action in ("ack", "clear") and not found["active"]:
        return fail(f"alarm {args.ref} ({found['host']} {found['name']}) is not active")
    return _send(settings, int(args.ref), found["host"], args.action, args.user, args.note)


def _bus_users(settings) -> list[str]:
    """The broker users of ``[bus] url``, in order, without repeats."""
    from connector.amqp.connection import BrokerURL

    users: list[str] = []
    for url in settings.bus.urls:
        name = BrokerURL.parse(url.reveal()).username
        if name not in users:
            users.append(name)
    return users


def _send(settings, ref: int, host: str, action: str, on_behalf: str | None,
          note: str | None) -> int:
    from connector import messages
    from connector.command import require_broker, run_on_reactor

    require_broker(settings)
    users = _bus_users(settings)
    if on_behalf is not None:
        services = settings.section("correlator").command_services
        untrusted = [u for u in users if u not in services]
        if untrusted:
            print(f"centaure alarms: --user is only for a trusted service: bus user "
                  f"{untrusted[0]!r} is not in [correlator] command_services, so the correlator "
                  f"would record the command under {untrusted[0]!r} (or refuse it); leave "
                  "--user out to act as yourself", file=sys.stderr)
            return 1
    # An operator's command is recorded under its user-id (the bus user) whatever
    # this field says; it names the bus user so that the two agree.
    user = on_behalf or users[0]
    command = messages.AlarmCommand(source=f"cli@{settings.connector.node}", ref=ref,
                                    action=action, user=user, note=note, host=host,
                                    ts=time.time())

    async def send(reactor) -> int:
        from connector.amqp import oneshot
        from connector.topology import connector_queue

        prefix, partitions = settings.bus.exchange_prefix, settings.bus.partitions
        if partitions:
            # Several nodes: the command goes (alarm_command.<p>.<host>) to the
            # queue of the host's partition, read by the node that owns it.
            from connector.partitions import partition_of
            from connector.topology import partition_queue

            queue = partition_queue(prefix, "correlator", partition_of(host, partitions)).name
        else:
            queue = connector_queue(prefix, "correlator").name
        await oneshot.publish_confirmed(reactor, settings.bus, command,
                                        f"cmd:{uuid.uuid4().hex}", "cli", require_queue=queue)
        by = f"by {users[0]} on behalf of {on_behalf}" if on_behalf else f"as {users[0]}"
        print(f"{action} of alarm {ref} ({host}) sent {by}; the correlator applies it if "
              "that user may command alarms ([correlator] operators or command_services)")
        return 0

    return run_on_reactor(f"alarms {action}", send)


def add_commands(sub: argparse._SubParsersAction, with_config: Callable) -> dict[str, Callable]:
    """``centaure alarms``: its parser, and its handler by name."""
    add_alarms_arguments(with_config(sub.add_parser(
        "alarms", help="the correlator's alarms; ack, unack, clear or note one")))
    return {"alarms": alarms_command}
