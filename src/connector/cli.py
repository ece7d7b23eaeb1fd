"""The ``centaure`` command: operations on the bus and the connectors."""

from __future__ import annotations

import argparse
import sys
import time

from connector.reactor import install_asyncio_reactor


def _load(path: str):
    from connector.settings import SettingsError, load_settings

    try:
        return load_settings(path)
    except SettingsError as e:
        raise SystemExit(f"centaure: {e}") from None


def _run(name: str, coro_fn, *args) -> int:
    """Run ``coro_fn(reactor, *args)`` on the asyncio reactor; return its exit code."""
    install_asyncio_reactor()
    from twisted.internet import defer, task

    result = {"code": 0}

    async def main(reactor):
        try:
            result["code"] = await coro_fn(reactor, *args) or 0
        except Exception as e:  # a command prints one line, not a traceback
            print(f"centaure {name}: {e.__class__.__name__}: {e}", file=sys.stderr)
            result["code"] = 1

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            return e.code if isinstance(e.code, int) else 1
    return result["code"]


def _require_amqp(settings) -> None:
    if [u.reveal() for u in settings.bus.urls] == ["embedded"]:
        raise SystemExit("centaure: [bus] url is 'embedded': there is no broker to talk to "
                         "(set [bus] url to amqp://... in the settings file)")


async def bus_config(reactor, settings) -> int:
    """Declare exchanges, queues and bindings; print each step."""
    from connector.amqp import oneshot
    from connector.amqp.subscriber import declare_queue
    from connector.topology import all_queues, dead_letter_exchange, exchange_names

    prefix = settings.bus.exchange_prefix
    protocol, channel = await oneshot.connect(reactor, settings.bus)
    print(f"connected to {protocol.broker}")
    try:
        for name in exchange_names(prefix) + (dead_letter_exchange(prefix),):
            await channel.exchange_declare(exchange=name, type="topic", durable=True)
            print(f"exchange {name} (topic, durable)")
        for spec in all_queues(prefix, settings.bus.queue_type):
            await declare_queue(channel, spec)
            args = ", ".join(f"{k}={v}" for k, v in sorted(spec.arguments.items()))
            print(f"queue {spec.name} (durable{', ' + args if args else ''})")
            for b in spec.bindings:
                print(f"  bound to {b.exchange} with {b.pattern!r}")
    finally:
        await oneshot.close(protocol)
    print("bus configured")
    return 0


async def read_status(reactor, settings) -> list:
    """Every heartbeat kept in the status queue (left there for the next reader)."""
    from connector import messages
    from connector.amqp import oneshot
    from connector.amqp.subscriber import declare_queue
    from connector.topology import status_queue

    protocol, channel = await oneshot.connect(reactor, settings.bus)
    found = []
    try:
        await declare_queue(channel, status_queue(settings.bus.exchange_prefix))
        while True:
            reply = await channel.basic_get(queue=status_queue(settings.bus.exchange_prefix).name,
                                            no_ack=False)
            if reply.method.name != "get-ok":
                break
            body = reply.content.body
            try:
                found.append(messages.decode(body if isinstance(body, bytes) else body.encode(),
                                             expected_type="status"))
            except messages.MessageError:
                continue
        # Closing without acking hands every heartbeat back to the queue.
    finally:
        await oneshot.close(protocol)
    return found


async def status(reactor, settings) -> int:
    """Print the table of connectors seen on the bus."""
    from connector.status import latest_by_connector, status_table

    seen = latest_by_connector(await read_status(reactor, settings))
    print(status_table(seen, time.time(), settings.connector.status_interval,
                       settings.connector.lost_after))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``centaure`` command."""
    parser = argparse.ArgumentParser(prog="centaure", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p):
        p.add_argument("-c", "--config", default="settings.ini", help="settings file (INI)")
        return p

    with_config(sub.add_parser("bus-config", help="declare exchanges, queues, bindings"))
    with_config(sub.add_parser("status", help="connectors seen on the bus"))
    poll = with_config(sub.add_parser("poll", help="poll one inventory device once, print it"))
    poll.add_argument("host", help="the device's inventory name")
    poll.add_argument("--json", action="store_true", help="machine-readable output")
    db = with_config(sub.add_parser("db", help="the SQL schema: upgrade, current, check"))
    db.add_argument("action", choices=("upgrade", "current", "check"),
                    help="upgrade: create or upgrade the tables; current: print the "
                         "revision; check: exit 1 unless the schema is up to date")
    query = with_config(sub.add_parser("query", help="stored samples, events or alarms"))
    from connector_db.cli import add_query_arguments

    add_query_arguments(query)
    alarms = with_config(sub.add_parser(
        "alarms", help="the correlator's alarms; ack, unack, clear or note one"))
    from connector_alarms.cli import add_alarms_arguments

    add_alarms_arguments(alarms)
    silence = with_config(sub.add_parser("silence", help="add, list or remove silences"))
    from connector_alerter.cli import add_silence_arguments

    add_silence_arguments(silence)
    rules = with_config(sub.add_parser("rules", help="validate the alerter's threshold rules"))
    from connector_alerter.rules_cli import add_rules_arguments

    add_rules_arguments(rules)
    init = sub.add_parser("init", help="write a commented starter configuration into a folder")
    from connector.init import add_init_arguments

    add_init_arguments(init)
    demo = sub.add_parser("demo", help="a simulated fleet, every connector, SQLite, embedded bus")
    from connector.demo import add_demo_arguments

    add_demo_arguments(demo)
    args = parser.parse_args(argv)

    if args.command == "demo":
        from connector.demo import demo_command

        return demo_command(args)
    if args.command == "init":
        from connector.init import init_command

        return init_command(args)
    settings = _load(args.config)
    if args.command in ("bus-config", "status"):
        _require_amqp(settings)
        fn = bus_config if args.command == "bus-config" else status
        return _run(args.command, fn, settings)
    if args.command == "poll":
        from connector_snmp.cli import poll_command

        return _run("poll", poll_command, settings, args.host, args.json)
    if args.command == "db":
        from connector_db.migrate import db_command

        return db_command(settings, args.action)
    if args.command == "alarms":
        from connector_alarms.cli import alarms_command

        return alarms_command(settings, args)
    if args.command == "silence":
        from connector_alerter.cli import silence_command

        return silence_command(settings, args)
    if args.command == "rules":
        from connector_alerter.rules_cli import rules_command

        return rules_command(settings, args)
    if args.command == "query":
        from connector_db.cli import query_command

        return query_command(settings, args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
