"""Several nodes, as an operator runs them: bus-config, definitions and status with partitions."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import uuid

import pika
import pytest
import pytest_twisted

from connector import messages
from connector.topology import partition_queue, status_queue
from tests.conftest import AMQP_URL, ROOT, rabbitmqctl

pytestmark = pytest.mark.integration
CENTAURE = os.path.join(os.path.dirname(sys.executable), "centaure")
P = 4


def _centaure(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CENTAURE, *args], capture_output=True, text=True, cwd=ROOT, timeout=60)


def _heartbeat(connector, node, pid, ownership, counters=None) -> bytes:
    return messages.encode(messages.Status(
        source=f"{connector}@{node}", ts=time.time(), connector=connector, node=node, pid=pid,
        version="0.1", state="ok", uptime=60, counters=counters or {},
        ownership={role: messages.Ownership(partitions=p, owned=owned, members=members)
                   for role, (p, owned, members) in ownership.items()}))


def test_status_shows_who_owns_which_partitions(write_settings, prefix):
    settings = write_settings(connector={"status_interval": "10s"})
    queue = status_queue(prefix)
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.exchange_declare(f"{prefix}.status", "topic", durable=True)
        ch.queue_declare(queue.name, durable=True, arguments=queue.arguments)
        ch.queue_bind(queue.name, f"{prefix}.status", "#")
        for body in (
            _heartbeat("snmp", "node1", 11, {"snmp": (8, [0, 1, 2, 3], 2)}, {"devices": 1000}),
            _heartbeat("snmp", "node2", 12, {"snmp": (8, [4, 5, 6], 2)}, {"devices": 750}),
            _heartbeat("correlator", "node1", 13, {"correlator": (8, list(range(8)), 1)}),
            _heartbeat("alerter", "node2", 14, {"alerter": (16, [0], 1), "notifier": (1, [0], 1)}),
        ):
            ch.basic_publish(f"{prefix}.status", "status.x", body,
                             pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()

    out = _centaure("status", "-c", settings)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    # The connectors' table as on one node, then the ownership.
    assert text.splitlines()[0].split()[:3] == ["NODE", "CONNECTOR", "STATE"]
    rows = {tuple(line.split()[:2]): line.split() for line in text.splitlines()
            if line.split()[:1] in (["snmp"], ["correlator"], ["alerter"], ["notifier"])}
    assert rows[("snmp", "node1")][3:5] == ["4/8", "1000"]
    assert rows[("snmp", "node2")][3:5] == ["3/8", "750"]
    assert rows[("correlator", "node1")][3] == "8/8"
    assert rows[("notifier", "node2")][3] == "1/1"
    assert "snmp: 1 of 8 partitions without an owner: 7" in text
    assert "correlator: every one of 8 partitions owned, by 1 node" in text
    assert "alerter: 15 of 16 partitions without an owner: 1-15" in text
    # The heartbeats stay in the queue for the next reader.
    again = _centaure("status", "-c", settings).stdout
    assert "snmp: 1 of 8 partitions without an owner: 7" in again


def test_bus_config_with_partitions_declares_and_prints_the_partition_queues(write_settings,
                                                                             prefix):
    settings = write_settings(bus={"queue_type": "quorum", "partitions": str(P)})
    out = _centaure("bus-config", "-c", settings)
    assert out.returncode == 0, out.stdout + out.stderr
    for connector in ("correlator", "alerter"):
        for p in range(P):
            assert f"queue {prefix}.{connector}.p{p} " in out.stdout
        assert (f"partition queues of {connector}: {prefix}.{connector}.p0 to "
                f"{prefix}.{connector}.p{P - 1} ({P} of {P};") in out.stdout
    assert "'<type>.3.#'" in out.stdout
    names = set(rabbitmqctl("list_queues", "name", "--no-table-headers").split())
    ours = {n for n in names if n.startswith(prefix + ".")}
    assert ours == ({f"{prefix}.{c}.p{p}" for c in ("correlator", "alerter") for p in range(P)}
                    # The writer and the console are not partitioned.
                    | {f"{prefix}.{n}" for n in ("db", "console", "dead", "status")})
    assert _centaure("bus-config", "-c", settings).returncode == 0  # idempotent


@pytest.fixture
def users():
    """A unique user-name prefix; its users are deleted afterwards."""
    p = f"u{uuid.uuid4().hex[:8]}"
    yield p
    for line in rabbitmqctl("list_users", "--no-table-headers").splitlines():
        name = line.split("\t")[0]
        if name == p or name.startswith(p + "-"):
            rabbitmqctl("delete_user", name)


@pytest.fixture
def definitions_path():
    """A file rabbitmqctl can read (it runs as the broker's user, not as the test's)."""
    path = pathlib.Path(tempfile.gettempdir()) / f"centaure-definitions-{uuid.uuid4().hex}.json"
    yield path
    path.unlink(missing_ok=True)


def _refused(action) -> str:
    try:
        action()
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 403, e
        return e.reply_text
    raise AssertionError("the broker allowed it")


@pytest_twisted.ensureDeferred
async def test_definitions_with_partitions_let_each_connector_hold_only_its_tokens(
        tmp_path, prefix, users, definitions_path):
    from twisted.internet import reactor

    from connector.amqp.tokens import TokenHolder
    from connector.metrics import Counters
    from tests.conftest import settings_text
    from tests.integration.support import start_bus, wait_until

    admin_settings = tmp_path / "admin.ini"
    admin_settings.write_text(settings_text(prefix, tmp_path, bus={"queue_type": "quorum",
                                                                   "partitions": str(P)}))
    out = _centaure("bus-config", "-c", str(admin_settings), "--definitions",
                    str(definitions_path), "--user-prefix", users)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"({P} partitions: partition queues and token rights)" in out.stdout
    doc = json.loads(definitions_path.read_text())
    assert {q["name"] for q in doc["queues"]} >= {f"{prefix}.correlator.p{P - 1}",
                                                   f"{prefix}.alerter.p0"}
    assert f"{prefix}.correlator" not in {q["name"] for q in doc["queues"]}
    definitions_path.chmod(0o644)
    rabbitmqctl("import_definitions", str(definitions_path))
    for connector in ("snmp", "correlator", "alerter"):
        rabbitmqctl("change_password", f"{users}-{connector}", f"{connector}-pw")

    def settings_for(connector: str) -> str:
        path = tmp_path / f"{connector}.ini"
        url = f"amqp://{users}-{connector}:{connector}-pw@127.0.0.1:5672/%2F"
        path.write_text(settings_text(prefix, tmp_path, url=url,
                                      bus={"queue_type": "quorum", "partitions": str(P)}))
        return str(path)

    # Each connector's process, with its own user, seeds and holds its roles' tokens.
    holders, buses = [], []
    try:
        for connector, roles in (("snmp", ("snmp",)), ("correlator", ("correlator",)),
                                 ("alerter", ("alerter", "notifier"))):
            bus = await start_bus(settings_for(connector), app_id=connector)
            buses.append(bus)
            for role in roles:
                holder = TokenHolder(role, 1 if role == "notifier" else P, prefix,
                                     Counters(role), reactor, node=connector)
                bus.connection.add_subscriber(holder)
                holders.append(holder)
        await wait_until(lambda: all(len(h.owned) == h.partitions for h in holders), 20,
                         "every role's tokens to be held")
    finally:
        for bus in buses:
            await bus.stopService()

    # The correlator reads its partition queues, and nothing of the alerter's or the poller's.
    conn = pika.BlockingConnection(pika.URLParameters(
        f"amqp://{users}-correlator:correlator-pw@127.0.0.1:5672/%2F"))
    try:
        ch = conn.channel()
        spec = partition_queue(prefix, "correlator", P - 1)
        ch.queue_declare(spec.name, durable=True, arguments=spec.arguments)
        for b in spec.bindings:
            ch.queue_bind(spec.name, b.exchange, b.pattern)
        # Single active consumer queues take no basic.get: consume, as the daemons do.
        ch.basic_cancel(ch.basic_consume(spec.name, lambda *a: None))
        for other in (f"{prefix}.alerter.p0", f"{prefix}.token.snmp.0",
                      f"{prefix}.token.notifier.0", f"{prefix}.members.alerter"):
            ch = conn.channel()
            assert f"queue '{other}'" in _refused(
                lambda: ch.basic_consume(other, lambda *a: None))
    finally:
        if conn.is_open:
            conn.close()

    # The alerter declares, binds and reads the notifier's queue (every alarm).
    conn = pika.BlockingConnection(pika.URLParameters(
        f"amqp://{users}-alerter:alerter-pw@127.0.0.1:5672/%2F"))
    try:
        ch = conn.channel()
        name = f"{prefix}.alerter.notifier"
        ch.queue_declare(name, durable=True,
                         arguments=partition_queue(prefix, "alerter", 0).arguments)
        ch.queue_bind(name, f"{prefix}.alarm", "#")
        ch.basic_cancel(ch.basic_consume(name, lambda *a: None))
        assert f"queue '{prefix}.correlator.p0'" in _refused(
            lambda: ch.basic_consume(f"{prefix}.correlator.p0", lambda *a: None))
    finally:
        if conn.is_open:
            conn.close()
