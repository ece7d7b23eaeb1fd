"""Two ``twistd centaure-traps`` in front of the same device count each trap once.

A device configured with two trap destinations sends the same datagram to
both receivers. Here net-snmp ``snmptrap`` builds each v2c linkDown (it picks
its own request-id, so one datagram is captured per trap on a local socket)
and the very same bytes are sent to both receivers, from two source ports, as
a device with two trap sinks does; a few are sent a third time (a
retransmission). Both receivers (two nodes, same inventory and definitions)
publish every trap under the same deterministic message id; the SQL writer
and the correlator, on the same broker and MariaDB, keep each one once: one
row per trap in the events table, one alarm per interface whose count is the
number of distinct traps, not twice that.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid

import pytest
import sqlalchemy as sa
import yaml

from tests.conftest import MARIADB_URL, settings_text
from tests.integration.daemons import TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port
from tests.integration.support import declare_consumer_queues, drop_prefixed_tables
from tests.snmp.snmpd import free_udp_port, tool_env
from centaure.shipped import example_path

pytestmark = pytest.mark.integration
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
IF_INDEX = "1.3.6.1.2.1.2.2.1.1"
TRAPS = 50
INTERFACES = 10


@pytest.fixture
def tables():
    """Unique table prefixes for the writer and the correlator; dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    names = {"db": f"w{tag}_", "correlator": f"c{tag}_"}
    yield names
    drop_prefixed_tables(MARIADB_URL, tuple(names.values()))


def captured_traps(tmp_path, n: int) -> list[bytes]:
    """``n`` v2c linkDown datagrams as net-snmp's snmptrap sends them (captured, not delivered)."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(10)
    port = sink.getsockname()[1]
    out = []
    try:
        for i in range(n):
            index = i % INTERFACES + 1
            r = subprocess.run(
                ["snmptrap", "-M", "/dev/null", "-v", "2c", "-c", "public", f"127.0.0.1:{port}",
                 str(1000 + i), LINK_DOWN, f"{IF_INDEX}.{index}", "i", str(index)],
                capture_output=True, text=True, env=tool_env(tmp_path / "nethome"), timeout=30)
            assert r.returncode == 0, r.stderr
            data, _ = sink.recvfrom(65535)
            out.append(data)
    finally:
        sink.close()
    return out


def ready(status: int, body: dict) -> bool:
    return body.get("connectors", {}).get("correlator", {}).get("state") == "ready"


def correlator_counters(daemon: TwistdDaemon) -> dict:
    _status, body = daemon.health()
    return body.get("connectors", {}).get("correlator", {}).get("alarms", {})


def stored(table_prefixes: dict) -> tuple[list, dict]:
    """(message ids of the writer's events, {identity: (count, active)} of the correlator)."""
    engine = sa.create_engine(MARIADB_URL)
    try:
        with engine.connect() as c:
            ids = [r[0] for r in c.execute(sa.text(
                f"SELECT message_id FROM {table_prefixes['db']}events"))]
            alarms = {(h, k): (n, bool(a)) for h, k, n, a in c.execute(sa.text(
                f"SELECT host, identity, count, active FROM {table_prefixes['correlator']}alarms"))}
    finally:
        engine.dispose()
    return ids, alarms


def test_the_same_trap_through_two_receivers_is_stored_and_counted_once(tmp_path, prefix, tables):
    declare_consumer_queues(prefix, "correlator", "db")
    receivers, ports = [], []
    for node in ("trapsA", "trapsB"):
        folder = tmp_path / node
        folder.mkdir()
        shutil.copy(example_path("traps.yaml"), folder / "traps.yaml")
        (folder / "inventory.yaml").write_text(yaml.safe_dump({"devices": [
            {"name": "sw-core", "address": "127.0.0.1", "device_type": "switch"}]}))
        port = free_udp_port()
        ports.append(port)
        (folder / "settings.ini").write_text(settings_text(
            prefix, folder, connector={"node": node},
            inventory={"path": "inventory.yaml"},
            traps={"listen": f"127.0.0.1:{port}", "definitions": "traps.yaml",
                   "dedup_window": "0", "rate_limit": "0"}))
        receivers.append(TwistdDaemon("centaure-traps", folder / "settings.ini"))
    back = tmp_path / "back"
    back.mkdir()
    corr_port = free_tcp_port()
    (back / "correlator.ini").write_text(settings_text(
        prefix, back, connector={"http_port": str(corr_port), "node": "backend"},
        database={"url": MARIADB_URL},
        correlator={"table_prefix": tables["correlator"], "batch_interval": "20ms",
                    "tick_interval": "0.2s"}))
    (back / "db.ini").write_text(settings_text(
        prefix, back, connector={"node": "backend"}, database={"url": MARIADB_URL},
        db={"table_prefix": tables["db"], "batch_interval": "20ms"}))
    correlator = TwistdDaemon("centaure-correlator", back / "correlator.ini", corr_port)
    writer = TwistdDaemon("centaure-db", back / "db.ini")
    daemons = [*receivers, correlator, writer]
    try:
        datagrams = captured_traps(tmp_path, TRAPS)
        for r in receivers:
            r.wait_log("receiving traps on")
        correlator.wait_health(ready)
        writer.wait_log("ready (schema")

        # A device with two trap sinks: one socket (source port) per destination.
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in ports]
        try:
            for data in datagrams:
                for sender, port in zip(senders, ports):
                    sender.sendto(data, ("127.0.0.1", port))
            for data in datagrams[:5]:  # retransmitted to the first receiver
                senders[0].sendto(data, ("127.0.0.1", ports[0]))
        finally:
            for s in senders:
                s.close()
        copies = 2 * TRAPS + 5

        # Every copy reached the correlator (its duplicates counter says so) ...
        deadline = time.monotonic() + 30
        while True:
            counters = correlator_counters(correlator)
            if counters.get("events", 0) + counters.get("duplicates", 0) >= copies:
                break
            for d in daemons:
                assert d.alive(), d.logs()[-3000:]
            assert time.monotonic() < deadline, f"correlator counters {counters}"
            time.sleep(0.1)
        assert (counters["events"], counters["duplicates"]) == (TRAPS, copies - TRAPS), counters

        # ... and was written once: one row per trap, one alarm per interface.
        per_interface = TRAPS // INTERFACES
        want = {("sw-core", str(i)): (per_interface, True) for i in range(1, INTERFACES + 1)}
        deadline = time.monotonic() + 20
        while True:
            ids, alarms = stored(tables)
            if len(ids) >= TRAPS and alarms == want:
                break
            assert time.monotonic() < deadline, (len(ids), alarms)
            time.sleep(0.2)
        time.sleep(1.0)  # nothing more arrives
        ids, alarms = stored(tables)
        assert len(ids) == TRAPS == len(set(ids))
        assert all(i.startswith("trap:") for i in ids)
        assert alarms == want
        for d in daemons:
            assert d.alive(), d.logs()[-3000:]
    finally:
        for d in daemons:
            d.stop()
