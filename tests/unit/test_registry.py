"""Every connector declares itself once (entry point ``centaure.connectors``) and the core reads only that."""

from __future__ import annotations

import argparse

import pytest

from connector.registry import ConnectorSpec, installed, load_target
from connector.topology import all_queues, connector_queue, consumers

#: The connectors this distribution ships, with the message types their queues receive.
SHIPPED = {
    "snmp": (),
    "traps": (),
    "db": ("perf", "event", "alarm", "threshold", "notification"),
    "correlator": ("event", "alarm_snapshot", "threshold", "alarm_command"),
    "alerter": ("perf", "alarm"),
    "console": ("alarm", "status"),
}


def test_every_shipped_connector_is_declared_in_start_order():
    specs = installed()
    assert list(specs) == ["snmp", "traps", "db", "correlator", "alerter", "console"]
    for name, spec in specs.items():
        assert isinstance(spec, ConnectorSpec)
        assert spec.consumes == SHIPPED[name]
        assert callable(load_target(spec.build))

#: What each shipped connector publishes besides its status heartbeat (docs/design.md's table).
PUBLISHES = {
    "snmp": ("perf", "alarm_snapshot"),
    "traps": ("event",),
    "db": (),
    "correlator": ("alarm",),
    "alerter": ("threshold", "notification"),
    "console": ("alarm_command",),
}


def test_each_connector_declares_what_it_publishes():
    assert {name: spec.publishes for name, spec in installed().items()} == PUBLISHES


def test_queues_come_from_the_declarations():
    assert consumers() == {n: c for n, c in SHIPPED.items() if c}
    queue = connector_queue("p", "alerter", "quorum")
    assert queue.name == "p.alerter"
    assert queue.message_types == ("perf", "alarm")
    assert queue.arguments["x-queue-type"] == "quorum"
    assert {q.name for q in all_queues("p")} >= {"p.db", "p.correlator", "p.alerter"}
    with pytest.raises(KeyError, match="consumes nothing"):
        connector_queue("p", "snmp")


def test_a_bounded_queue_drops_its_oldest_and_never_dead_letters():
    from connector.topology import BOUNDED_MAX_LENGTH, BOUNDED_TTL_MS

    queue = connector_queue("p", "console")
    assert queue.arguments == {"x-message-ttl": BOUNDED_TTL_MS,
                               "x-max-length": BOUNDED_MAX_LENGTH, "x-overflow": "drop-head"}
    assert connector_queue("p", "console", "quorum").arguments["x-queue-type"] == "quorum"
    assert [b.exchange for b in queue.bindings] == ["p.alarm", "p.status"]


def test_each_connector_adds_its_own_commands():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    handlers = {}
    for spec in installed().values():
        if spec.commands:
            handlers.update(load_target(spec.commands)(sub, lambda p: p))
    assert set(handlers) == {"poll", "db", "query", "alarms", "silence", "rules",
                             "console"}
    assert all(callable(h) for h in handlers.values())
    args = parser.parse_args(["poll", "router01", "--json"])
    assert (args.command, args.host, args.json) == ("poll", "router01", True)


def test_definitions_give_each_user_what_its_connector_publishes_and_consumes():
    from connector.permissions import definitions

    doc = definitions("p", "/", "quorum", "c")
    rights = {p["user"]: p for p in doc["permissions"]}
    assert set(rights) == {"c", "c-snmp", "c-traps", "c-db", "c-correlator", "c-alerter",
                           "c-console"}
    assert rights["c-snmp"]["write"] == r"^(p\.alarm_snapshot|p\.perf|p\.status)$"
    assert rights["c-snmp"]["read"] == "^$"
    assert rights["c-correlator"]["write"] == r"^(p\.alarm|p\.correlator|p\.dead|p\.status)$"
    assert rights["c"]["write"] == r"^(p\.alarm_command|p\.status)$"
    assert all(u["password_hash"] == "" and u["tags"] == [] for u in doc["users"])
    assert {q["name"] for q in doc["queues"]} == {"p.db", "p.correlator", "p.alerter", "p.console",
                                                 "p.dead", "p.status"}
    assert {"source": "p.perf", "vhost": "/", "destination": "p.db", "destination_type": "queue",
            "routing_key": "#", "arguments": {}} in doc["bindings"]
