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
    from connector.registry import installed, load_target

    parser = argparse.ArgumentParser(prog="centaure", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", default="settings.ini", help="settings file (INI)")
        return p

    with_config(sub.add_parser("bus-config", help="declare exchanges, queues, bindings"))
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
    if args.command in ("bus-config", "status"):
        require_broker(settings)
        fn = bus_config if args.command == "bus-config" else status
        return run_on_reactor(args.command, fn, settings)
    return handlers[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
