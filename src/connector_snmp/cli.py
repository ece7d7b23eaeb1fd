"""``centaure poll HOST``: one poll of one inventory device, printed, nothing published."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from connector.command import run_on_reactor
from connector.status import format_table
from centaure_shared import operators as ops
from connector_snmp.client import SnmpClient
from connector_snmp.poller import DevicePoller
from connector_snmp.service import PollerConfigError, build_registry, load_config


async def poll_command(reactor, settings, host: str, as_json: bool) -> int:
    """Print the poll of ``host``; exit code 1 when it did not answer, 2 on bad input."""
    snmp = settings.section("snmp")
    try:
        config = load_config(settings, build_registry(snmp))
    except (PollerConfigError, ops.OperatorError) as e:
        print(f"centaure poll: {e}", file=sys.stderr)
        return 2
    device = config.devices.get(host)
    if device is None:
        known = ", ".join(sorted(config.devices)[:10])
        print(f"centaure poll: no device {host!r} in the inventory (e.g. {known})", file=sys.stderr)
        return 2
    if host not in config.plans:
        print(f"centaure poll: {host} is not polled: {config.skipped.get(host)}", file=sys.stderr)
        return 2
    client = SnmpClient(reactor, snmp.max_in_flight_per_agent, snmp.recv_buffer)
    client.start()
    try:
        poller = DevicePoller(client, f"poll@{settings.connector.node}", ops.StateStore())
        outcome = await poller.poll(device, config.targets[host], config.plans[host],
                                    with_rows=True)
    finally:
        await client.stop()
    if as_json:
        print(json.dumps({
            "host": host, "address": device.address, "reachable": outcome.reachable,
            "error": outcome.error, "seconds": round(outcome.seconds, 4),
            "metrics": [dict(zip(("metric", "index", "kind", "value", "unit", "oid"), row))
                        for row in outcome.rows],
            "alarms": [{"key": a.key, "name": a.name, "severity": a.severity,
                        "message": a.message} for a in (outcome.snapshot.alarms
                                                        if outcome.snapshot else [])],
        }, default=str, indent=2))
    else:
        print(f"{host} ({device.address}:{device.port}, {device.device_type}) "
              f"polled in {outcome.seconds * 1000:.0f} ms")
        if outcome.rows:
            rows = [("METRIC", "INDEX", "KIND", "VALUE", "UNIT", "OID")] + [
                (m, i, k, str(v), u or "", o) for m, i, k, v, u, o in outcome.rows]
            print(format_table(rows))
        if outcome.snapshot and outcome.snapshot.alarms:
            print()
            print(format_table([("ALARM", "NAME", "SEVERITY", "MESSAGE")] + [
                (a.key, a.name, a.severity, a.message) for a in outcome.snapshot.alarms]))
    if not outcome.reachable:
        print(f"centaure poll: {host} did not answer: {outcome.error}", file=sys.stderr)
        return 1
    if outcome.error:
        print(f"centaure poll: {host} answered with an error: {outcome.error}", file=sys.stderr)
        return 1
    return 0


def add_commands(sub: argparse._SubParsersAction, with_config: Callable) -> dict[str, Callable]:
    """``centaure poll HOST``: its parser, and its handler by name."""
    poll = with_config(sub.add_parser("poll", help="poll one inventory device once, print it"))
    poll.add_argument("host", help="the device's inventory name")
    poll.add_argument("--json", action="store_true", help="machine-readable output")
    return {"poll": lambda settings, args: run_on_reactor(
        "poll", poll_command, settings, args.host, args.json)}
