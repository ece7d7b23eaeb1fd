"""``twistd centaure-correlator`` reloading its topology and settings on SIGHUP (real RabbitMQ, MariaDB).

What an operator checks:

* two switches are unreachable, neither the parent of the other: both
  alarms are ``major``. The inventory is changed to make ``core-sw`` the
  parent of ``edge-sw`` (and ``update_interval`` and ``[db]`` in the
  settings file), ``kill -HUP``: one log line says what changed, that one
  alarm was masked, and that the ``[db]`` change waits for a restart; the
  child's alarm is published ``updated``, lowered to ``mask_severity`` with
  the parent's alarm as its cause;
* a broken inventory (an unknown parent) and ``kill -HUP``: one log line
  names the file, the device and the problem; the running topology is kept: when the parent comes
  back, the child's alarm is unmasked (``updated``, ``major`` again, no cause).
"""

from __future__ import annotations

import signal
import time
import uuid

import pika
import pytest
import yaml

from connector import messages
from connector_alarms.keys import alarm_ref
from connector_alarms.model import UNREACHABLE
from tests.conftest import AMQP_URL, MARIADB_URL, settings_text
from tests.integration.daemons import TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port
from tests.integration.support import (
    collect,
    declare_check_queue, declare_consumer_queues, drop_prefixed_tables,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def tables():
    tag = uuid.uuid4().hex[:8]
    names = {"db": f"w{tag}_", "correlator": f"c{tag}_"}
    yield names
    drop_prefixed_tables(MARIADB_URL, tuple(names.values()))


def write_settings(path, prefix: str, tmp_path, tables: dict, port: int, update_interval: str,
                   retry_max: str) -> None:
    path.write_text(settings_text(
        prefix, tmp_path, connector={"http_port": str(port)}, database={"url": MARIADB_URL},
        db={"table_prefix": tables["db"], "retry_initial": "0.2s", "retry_max": retry_max},
        correlator={"table_prefix": tables["correlator"], "batch_interval": "20ms",
                    "tick_interval": "0.2s", "update_interval": update_interval,
                    "mask_severity": "warning"}))


def write_inventory(tmp_path, edge_parent: str | None) -> None:
    edge = {"name": "edge-sw", "address": "10.0.0.2", "device_type": "switch"}
    if edge_parent:
        edge["parent"] = edge_parent
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"devices": [
        {"name": "core-sw", "address": "10.0.0.1", "device_type": "switch"}, edge]},
        sort_keys=False))


def snapshot(host: str, down: bool) -> messages.AlarmSnapshot:
    rows = [messages.SnapshotAlarm(key=UNREACHABLE, name=UNREACHABLE, severity="major",
                                   message="no answer to SNMP")] if down else []
    return messages.AlarmSnapshot(source="snmp@n1", ts=time.time(), host=host, alarms=rows)


def publish(prefix: str, items: list[messages.AlarmSnapshot]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for m in items:
            ch.basic_publish(messages.exchange_name(prefix, "alarm_snapshot"),
                             messages.routing_key(m), messages.encode(m),
                             pika.BasicProperties(message_id=uuid.uuid4().hex,
                                                  type="alarm_snapshot", delivery_mode=2))
    finally:
        conn.close()


def read_alarms(queue: str, want: int, timeout: float = 30,
                settle: float = 1.0) -> list[messages.Alarm]:
    """``want`` alarm messages, then ``settle`` seconds more for any extra."""
    return [messages.decode(body, expected_type="alarm")
            for _, body in collect(queue, want, timeout, settle)]


def hup_and_wait(daemon: TwistdDaemon, text: str) -> str:
    """SIGHUP, then the one log line containing ``text`` it causes."""
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while not [line for line in daemon.logs().splitlines() if text in line]:
        assert daemon.alive(), daemon.logs()[-3000:]
        assert time.monotonic() < deadline, f"no {text!r}:\n{daemon.logs()[-3000:]}"
        time.sleep(0.05)
    time.sleep(0.3)
    (line,) = [line for line in daemon.logs().splitlines() if text in line]
    return line


def ready(status: int, body: dict) -> bool:
    return body.get("connectors", {}).get("correlator", {}).get("state") == "ready"


def test_sighup_reloads_topology_and_settings(tmp_path, prefix, tables):
    port = free_tcp_port()
    ini = tmp_path / "correlator.ini"
    write_settings(ini, prefix, tmp_path, tables, port, "60s", "1s")
    write_inventory(tmp_path, None)
    declare_consumer_queues(prefix, "correlator")
    queue = declare_check_queue(prefix, "alarm")
    corr = TwistdDaemon("centaure-correlator", ini, port)
    core_ref = alarm_ref("core-sw", UNREACHABLE, UNREACHABLE)
    try:
        corr.wait_health(ready)
        publish(prefix, [snapshot("core-sw", True), snapshot("edge-sw", True)])
        alarms = read_alarms(queue, 2)
        assert sorted((a.host, a.state, a.severity, a.cause_ref) for a in alarms) == [
            ("core-sw", "raised", "major", None), ("edge-sw", "raised", "major", None)]

        # edge-sw now hangs off core-sw, which is down: its alarm is masked at once.
        write_inventory(tmp_path, "core-sw")
        write_settings(ini, prefix, tmp_path, tables, port, "30s", "2s")
        line = hup_and_wait(corr, "correlator reloaded")
        assert ("topology 1 parent links (1 changed); settings update_interval; "
                "1 alarms masked, 0 unmasked; changed but kept until a restart: [db]") in line, line
        (masked,) = read_alarms(queue, 1)
        assert (masked.host, masked.state, masked.severity, masked.cause_ref) == (
            "edge-sw", "updated", "warning", core_ref)

        # A broken inventory: refused in one line, the running topology kept.
        write_inventory(tmp_path, "nowhere")
        line = hup_and_wait(corr, "reload refused")
        assert ("keeping the running configuration: inventory: inventory.yaml: devices[1] "
                "(edge-sw): parent = 'nowhere': unknown parent device") in line, line
        assert read_alarms(queue, 0, settle=0.5) == []   # nothing changed

        # core-sw answers again: its child is unmasked, by the topology still running.
        publish(prefix, [snapshot("core-sw", False)])
        alarms = read_alarms(queue, 2)
        assert sorted((a.host, a.state, a.severity, a.cause_ref) for a in alarms) == [
            ("core-sw", "cleared", "major", None), ("edge-sw", "updated", "major", None)]
        assert corr.alive()
    finally:
        corr.stop()
