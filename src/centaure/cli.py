"""The ``centaure`` command: operations on the bus and the connectors."""

from __future__ import annotations

import argparse
import sys
import time

from connector.command import require_broker, run_on_reactor


def _load(path: str):
    from connector.settings import SettingsError, load_settings

    try:
        return load_settings(path)
    except SettingsError as e:
        raise SystemExit(f"centaure: {e}") from None


def _partition_of_queue(prefix: str, name: str) -> tuple[str, int] | None:
    """(connector, partition) of a partition queue ``<prefix>.<connector>.p<N>``, else None."""
    from connector.topology import PARTITIONED

    for connector in PARTITIONED:
        head = f"{prefix}.{connector}.p"
        if name.startswith(head) and name[len(head):].isdigit():
            return connector, int(name[len(head):])
    return None


async def bus_config(reactor, settings) -> int:
    """Declare exchanges, queues and bindings; print each step.

    A queue that exists with other arguments is named with what to do, the
    others are still declared, and the exit code is 1.
    """
    from connector.amqp import oneshot
    from connector.amqp.subscriber import QueueMismatch, declare_queue
    from connector.topology import all_queues, dead_letter_exchange, exchange_names

    prefix = settings.bus.exchange_prefix
    protocol, channel = await oneshot.connect(reactor, settings.bus)
    print(f"connected to {protocol.broker}")
    mismatched = []
    declared_partitions: dict[str, list[int]] = {}
    try:
        for name in exchange_names(prefix) + (dead_letter_exchange(prefix),):
            await channel.exchange_declare(exchange=name, type="topic", durable=True)
            print(f"exchange {name} (topic, durable)")
        for spec in all_queues(prefix, settings.bus.queue_type, settings.bus.partitions):
            try:
                await declare_queue(channel, spec)
            except QueueMismatch as e:
                print(f"ERROR: {e}")
                mismatched.append(spec.name)
                # The broker closed the channel: go on with a new one.
                channel = await protocol.channel(channel.id + 1)
                await channel.channel_open()
                continue
            partition = _partition_of_queue(prefix, spec.name)
            if partition is not None:
                connector, number = partition
                declared_partitions.setdefault(connector, []).append(number)
                if number > 0:
                    # Like p0 but for the partition in the routing keys: one line each.
                    print(f"queue {spec.name} (as {prefix}.{connector}.p0, routing keys "
                          f"'<type>.{number}.#')")
                    continue
            args = ", ".join(f"{k}={v}" for k, v in sorted(spec.arguments.items()))
            print(f"queue {spec.name} (durable{', ' + args if args else ''})")
            for b in spec.bindings:
                print(f"  bound to {b.exchange} with {b.pattern!r}")
    finally:
        await oneshot.close(protocol)
    for connector, numbers in declared_partitions.items():
        print(f"partition queues of {connector}: {prefix}.{connector}.p{min(numbers)} to "
              f"{prefix}.{connector}.p{max(numbers)} ({len(numbers)} of "
              f"{settings.bus.partitions}; the token queues are declared by the daemons)")
    if mismatched:
        print(f"bus NOT fully configured: {len(mismatched)} queue(s) differ: {', '.join(mismatched)}")
        return 1
    print("bus configured")
    return 0


def write_definitions(settings, path: str, user_prefix: str) -> int:
    """Write the RabbitMQ definitions (topology, users, permissions) to ``path``."""
    import json

    from connector.amqp.connection import BrokerURL
    from connector.permissions import definitions

    vhost = BrokerURL.parse(settings.bus.urls[0].reveal()).vhost
    partitions = settings.bus.partitions
    correlator = settings.section("correlator")
    doc = definitions(settings.bus.exchange_prefix, vhost, settings.bus.queue_type, user_prefix,
                      partitions, correlator.operators + correlator.command_services)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    users = ", ".join(u["name"] for u in doc["users"])
    print(f"wrote {path}: users {users} (no passwords), {len(doc['exchanges'])} exchanges, "
          f"{len(doc['queues'])} queues"
          + (f" ({partitions} partitions: partition queues and token rights)" if partitions else ""))
    print(f"import it with: rabbitmqctl import_definitions {path}")
    print("then set each password: rabbitmqctl change_password USER PASSWORD")
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
        queue = status_queue(settings.bus.exchange_prefix, settings.bus.queue_type)
        await declare_queue(channel, queue)
        while True:
            reply = await channel.basic_get(queue=queue.name, no_ack=False)
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
    """Print the table of connectors seen on the bus, then the partitions each node owns."""
    from centaure.ownership_view import ownership_report
    from connector.status import latest_by_connector, status_table

    heartbeats = await read_status(reactor, settings)
    now = time.time()
    interval, lost_after = settings.connector.status_interval, settings.connector.lost_after
    print(status_table(latest_by_connector(heartbeats), now, interval, lost_after))
    # Several nodes ([bus] partitions): who owns which partitions, and what nobody owns.
    report = ownership_report(heartbeats, now, interval, lost_after)
    if report:
        print()
        print(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``centaure`` command."""
    from connector.registry import installed, load_target

    parser = argparse.ArgumentParser(prog="centaure", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", default="settings.ini", help="settings file (INI)")
        return p

    bus = with_config(sub.add_parser("bus-config", help="declare exchanges, queues, bindings"))
    bus.add_argument("--definitions", metavar="FILE",
                     help="do not connect: write a RabbitMQ definitions file (exchanges, queues, "
                          "bindings, one user per connector with its permissions) to FILE")
    bus.add_argument("--user-prefix", default="centaure",
                     help="user names in --definitions: PREFIX (the centaure command) and "
                          "PREFIX-<connector> (default: %(default)s)")
    with_config(sub.add_parser("status", help="connectors seen on the bus"))
    # Each installed connector adds its own commands (poll, db, query, alarms...).
    handlers = {}
    for spec in installed().values():
        if spec.commands:
            handlers.update(load_target(spec.commands)(sub, with_config))
    init = sub.add_parser("init", help="write a commented starter configuration into a folder")
    from centaure.init import add_init_arguments

    add_init_arguments(init)
    demo = sub.add_parser("demo", help="a simulated fleet, every connector, SQLite, embedded bus")
    from centaure.demo import add_demo_arguments

    add_demo_arguments(demo)
    args = parser.parse_args(argv)

    if args.command == "demo":
        from centaure.demo import demo_command

        return demo_command(args)
    if args.command == "init":
        from centaure.init import init_command

        return init_command(args)
    settings = _load(args.config)
    if args.command == "bus-config" and args.definitions:
        require_broker(settings)
        return write_definitions(settings, args.definitions, args.user_prefix)
    if args.command in ("bus-config", "status"):
        require_broker(settings)
        fn = bus_config if args.command == "bus-config" else status
        return run_on_reactor(args.command, fn, settings)
    return handlers[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
