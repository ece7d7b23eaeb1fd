"""Two ``twistd centaure-correlator`` sharing 8 partitions on RabbitMQ and MariaDB.

What an operator checks when running the correlator on several nodes:

* both nodes start with nothing loaded, share the partitions, and each
  raises the alarms of its own hosts once (the alarms' ``source`` names both);
* ``centaure alarms ack`` reaches the node owning the alarm's host;
* one node killed with -9: the survivor takes its partitions, loads their
  state from SQL and clears every alarm (none raised twice); nothing is left
  in the partition queues, nothing is dead-lettered; an ack still reaches the
  (new) owner.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pika
import pytest

from connector import messages
from connector.topology import dead_letter_queue, partition_queue
from tests.conftest import AMQP_URL, MARIADB_URL, ROOT, rabbitmqctl, settings_text
from tests.integration.daemons import TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port
from tests.integration.support import declare_check_queue, drop_prefixed_tables, queue_depth

pytestmark = pytest.mark.integration
P = 8
HOSTS = [f"sw{i}.example.net" for i in range(40)]
LINK_DOWN, LINK_UP = "1.3.6.1.6.3.1.1.5.3", "1.3.6.1.6.3.1.1.5.4"
TS = 1_790_000_000.0


@pytest.fixture
def table_prefix():
    p = f"c{uuid.uuid4().hex[:8]}_"
    yield p
    drop_prefixed_tables(MARIADB_URL, p)


def node_settings(tmp_path, prefix: str, tables: str, node: str) -> tuple:
    folder = tmp_path / node
    folder.mkdir()
    port = free_tcp_port()
    path = folder / "correlator.ini"
    path.write_text(settings_text(
        prefix, folder, bus={"partitions": str(P), "balance_interval": "1s"},
        connector={"http_port": str(port), "node": node}, database={"url": MARIADB_URL},
        # The test acts for several people over the one guest user: a trusted service.
        correlator={"table_prefix": tables, "batch_interval": "20ms",
                    "tick_interval": "0.2s", "update_interval": "0",
                    "command_services": "guest"}))
    return path, port


def declare_queues(prefix: str) -> None:
    """The partition queues and the dead letters, as ``centaure bus-config`` would."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    for spec in [partition_queue(prefix, "correlator", p) for p in range(P)] + [
            dead_letter_queue(prefix)]:
        for b in spec.bindings:
            ch.exchange_declare(exchange=b.exchange, exchange_type="topic", durable=True)
        ch.queue_declare(queue=spec.name, durable=True, arguments=spec.arguments)
        for b in spec.bindings:
            ch.queue_bind(queue=spec.name, exchange=b.exchange, routing_key=b.pattern)
    conn.close()


def event(host: str, action: str, i: int = 0, key: str = "3") -> messages.Event:
    return messages.Event(ts=TS + i, source="traps@n1", host=host, address="10.0.0.1",
                          snmp_version="v2c", trap_oid=LINK_DOWN if action == "raise"
                          else LINK_UP, name="linkDown" if action == "raise" else "linkUp",
                          severity="major" if action == "raise" else "info", varbinds=[],
                          message="down", action=action, alarm="linkDown", key=key)


def publish(prefix: str, events: list[tuple[str, messages.Event]]) -> None:
    """As a trap receiver with ``[bus] partitions = 8``: ``event.<p>.<host>``."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.confirm_delivery()
    for mid, e in events:
        ch.basic_publish(f"{prefix}.event", messages.routing_key(e, P), messages.encode(e),
                         pika.BasicProperties(message_id=mid, type="event", delivery_mode=2))
    conn.close()


class Alarms:
    """Every alarm message published, by message id, read from a check queue."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.by_id: dict[str, messages.Alarm] = {}

    def read(self, done, what: str, timeout: float = 20) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        ch = conn.channel()
        deadline = time.monotonic() + timeout
        try:
            while not done(self):
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                method, props, body = ch.basic_get(self.queue, auto_ack=True)
                if method is None:
                    time.sleep(0.05)
                    continue
                self.by_id.setdefault(props.message_id,
                                      messages.decode(body, expected_type="alarm"))
        finally:
            conn.close()

    def of(self, state: str, key: str = "3") -> dict[str, list[messages.Alarm]]:
        """host -> its ``state`` messages (distinct ids) of alarm ``key``."""
        out: dict[str, list[messages.Alarm]] = {}
        for a in self.by_id.values():
            if a.state == state and a.ref == _ref(a.host, key):
                out.setdefault(a.host, []).append(a)
        return out


def _ref(host: str, key: str) -> int:
    from connector_alarms.keys import alarm_ref

    return alarm_ref(host, "linkDown", key)


def owned(daemon: TwistdDaemon) -> list[int]:
    """The partitions whose state the correlator has loaded (prepared)."""
    _, body = daemon.health()
    return body.get("connectors", {}).get("correlator", {}).get("partitions", [])


def ack(ini, ref: int, user: str) -> None:
    r = subprocess.run([sys.executable, "-m", "centaure.cli", "alarms", "ack", str(ref),
                        "--user", user, "-c", str(ini)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr


def settled(prefix: str) -> dict[str, int]:
    """Messages ready or unacked in each of ``prefix``'s partition queues and dead letters."""
    names = {partition_queue(prefix, "correlator", p).name for p in range(P)}
    names.add(dead_letter_queue(prefix).name)
    out = {}
    for line in rabbitmqctl("list_queues", "name", "messages").splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] in names:
            out[fields[0]] = int(fields[1])
    return out


def test_two_correlators_share_partitions_and_one_takes_over(tmp_path, prefix, table_prefix):
    declare_queues(prefix)
    alarms = Alarms(declare_check_queue(prefix, "alarm"))
    (ini_a, port_a), (ini_b, port_b) = (node_settings(tmp_path, prefix, table_prefix, n)
                                        for n in ("node-a", "node-b"))
    a = TwistdDaemon("centaure-correlator", ini_a, port_a)
    b = None
    try:
        a.wait_health(lambda s, body: len(owned(a)) == P)
        b = TwistdDaemon("centaure-correlator", ini_b, port_b)
        b.wait_health(lambda s, body: len(owned(a)) == len(owned(b)) == P // 2)
        assert "correlator state loaded from" not in a.logs()  # nothing loaded at start

        publish(prefix, [(f"r-{h}", event(h, "raise")) for h in HOSTS])
        alarms.read(lambda al: len(al.of("raised")) == len(HOSTS), "40 raised alarms")
        raised = alarms.of("raised")
        assert all(len(v) == 1 for v in raised.values())
        sources = {h: v[0].source for h, v in raised.items()}
        assert set(sources.values()) == {"correlator@node-a", "correlator@node-b"}

        # An operator's ack reaches the node owning the host.
        host_b = next(h for h, s in sources.items() if s == "correlator@node-b")
        ack(ini_a, _ref(host_b, "3"), "alice")
        alarms.read(lambda al: any(x.acked_by == "alice" for x in al.of("updated").get(
            host_b, [])), "the ack applied")
        (acked,) = alarms.of("updated")[host_b]
        assert acked.source == "correlator@node-b"

        b.kill()
        a.wait_health(lambda s, body: len(owned(a)) == P, timeout=20)
        publish(prefix, [(f"c-{h}", event(h, "clear", 1)) for h in HOSTS])
        alarms.read(lambda al: len(al.of("cleared")) == len(HOSTS), "40 cleared alarms")
        cleared = alarms.of("cleared")
        assert all(len(v) == 1 and v[0].source == "correlator@node-a"
                   for v in cleared.values())
        # Reloaded from SQL: node-b's alarms kept their count and their ack.
        assert cleared[host_b][0].count == 1 and cleared[host_b][0].acked_by == "alice"
        assert all(len(v) == 1 for v in alarms.of("raised").values())  # none raised twice

        # An ack on a host node-b owned reaches its new owner.
        publish(prefix, [(f"r2-{host_b}", event(host_b, "raise", 2, key="4"))])
        alarms.read(lambda al: host_b in al.of("raised", "4"), "a second alarm")
        ack(ini_a, _ref(host_b, "4"), "bob")
        alarms.read(lambda al: any(x.acked_by == "bob" for x in al.of("updated", "4").get(
            host_b, [])), "the second ack applied")

        deadline = time.monotonic() + 10
        while any(settled(prefix).values()) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not any(settled(prefix).values()), settled(prefix)
        assert queue_depth(dead_letter_queue(prefix).name) == 0
        assert "Traceback" not in a.logs(), a.logs()[-3000:]
    finally:
        a.stop()
        if b is not None:
            b.stop()
