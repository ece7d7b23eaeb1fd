"""``twistd centaure-correlator`` with real senders, RabbitMQ and MariaDB.

What an operator checks:

* net-snmp ``snmptrap`` sends linkDown three times then linkUp to the real
  trap receiver; the correlator publishes ``raised`` (count 1), then one
  ``updated`` with count 3 (repeats within ``update_interval`` are held and
  sent together), then ``cleared``; the SQL writer's alarm tables agree;
  ``centaure alarms`` lists the alarm while it is active and
  ``centaure alarms ack`` reaches the correlator, which publishes who acked;
* killed with -9 in the middle of a stream, then restarted: every alarm has
  exactly the count of raises sent, none was raised twice;
* its database stopped under it: nothing is applied twice or lost, /health
  says 503 meanwhile, and it goes on when the database is back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pika
import pytest
import sqlalchemy as sa
import yaml

from connector import messages
from tests.conftest import AMQP_URL, MARIADB_URL, ROOT, rabbitmqctl, settings_text
from tests.integration.daemons import TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port, private_mariadb
from tests.integration.support import (
    declare_check_queue, declare_consumer_queues, drop_prefixed_tables, queue_depth,
)
from tests.snmp.snmpd import free_udp_port, tool_env
from centaure.shipped import example_path

pytestmark = pytest.mark.integration
LINK_DOWN, LINK_UP = "1.3.6.1.6.3.1.1.5.3", "1.3.6.1.6.3.1.1.5.4"
IF_INDEX = "1.3.6.1.2.1.2.2.1.1"
TS = 1_790_000_000.0


@pytest.fixture
def tables():
    """Unique table prefixes for the writer and the correlator; dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    names = {"db": f"w{tag}_", "correlator": f"c{tag}_"}
    yield names
    drop_prefixed_tables(MARIADB_URL, tuple(names.values()))


def read_alarms(queue: str, want: int, timeout: float = 30) -> list[messages.Alarm]:
    """At least ``want`` distinct alarm messages (by message id), in arrival order."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    got: dict[str, messages.Alarm] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(got) < want and time.monotonic() < deadline:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                time.sleep(0.05)
                continue
            got.setdefault(props.message_id, messages.decode(body, expected_type="alarm"))
    finally:
        conn.close()
    assert len(got) >= want, f"{len(got)} of {want} alarm messages: {list(got.values())}"
    return list(got.values())


def correlator_settings(tmp_path, prefix: str, tables: dict, db_url: str = MARIADB_URL,
                        **correlator) -> tuple:
    port = free_tcp_port()
    path = tmp_path / "correlator.ini"
    path.write_text(settings_text(
        prefix, tmp_path, connector={"http_port": str(port)}, database={"url": db_url},
        db={"table_prefix": tables["db"], "retry_initial": "0.2s", "retry_max": "1s"},
        correlator={"table_prefix": tables["correlator"], "batch_interval": "20ms",
                    "tick_interval": "0.2s", **correlator}))
    return path, port


def ready(status: int, body: dict) -> bool:
    return body.get("connectors", {}).get("correlator", {}).get("state") == "ready"


def test_traps_raise_update_clear_end_to_end(tmp_path, prefix, tables):
    shutil.copy(example_path("traps.yaml"), tmp_path / "traps.yaml")
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"devices": [
        {"name": "sw-core", "address": "127.0.0.1", "device_type": "switch"}]}))
    trap_port = free_udp_port()
    declare_consumer_queues(prefix, "correlator", "db")
    alarm_queue = declare_check_queue(prefix, "alarm")
    # A second copy of every alarm command, to read what the CLI itself sent.
    seen = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        ch = seen.channel()
        ch.exchange_declare(f"{prefix}.alarm_command", "topic", durable=True)
        ch.queue_declare(f"{prefix}.commands_seen", durable=True)
        ch.queue_bind(f"{prefix}.commands_seen", f"{prefix}.alarm_command", "#")
    finally:
        seen.close()
    corr_ini, corr_port = correlator_settings(tmp_path, prefix, tables, update_interval="4s")
    others = tmp_path / "settings.ini"
    others.write_text(settings_text(
        prefix, tmp_path, database={"url": MARIADB_URL},
        db={"table_prefix": tables["db"], "batch_interval": "20ms"},
        traps={"listen": f"127.0.0.1:{trap_port}", "definitions": "traps.yaml",
               "dedup_window": "0"}))
    daemons = [TwistdDaemon("centaure-correlator", corr_ini, corr_port),
               TwistdDaemon("centaure-traps", others), TwistdDaemon("centaure-db", others)]
    try:
        daemons[0].wait_health(ready)
        daemons[1].wait_log("receiving traps on")
        daemons[2].wait_log("ready (schema")

        def snmptrap(oid: str, uptime: int) -> None:
            out = subprocess.run(
                ["snmptrap", "-M", "/dev/null", "-v", "2c", "-c", "public",
                 f"127.0.0.1:{trap_port}", str(uptime), oid, f"{IF_INDEX}.3", "i", "3"],
                capture_output=True, text=True, env=tool_env(tmp_path / "nethome"), timeout=30)
            assert out.returncode == 0, out.stderr

        for uptime in (100, 101, 102):  # the same alarm three times, within update_interval
            snmptrap(LINK_DOWN, uptime)
        raised, updated = read_alarms(alarm_queue, 2)
        assert (raised.state, raised.count, raised.severity) == ("raised", 1, "major")
        assert (updated.state, updated.count) == ("updated", 3)
        assert raised.host == "sw-core" and raised.name == "linkDown" and raised.origin == "trap"
        assert updated.ref == raised.ref

        listed = subprocess.run([sys.executable, "-m", "centaure.cli", "alarms", "-c",
                                 str(corr_ini), "--json"], capture_output=True, text=True,
                                cwd=ROOT, timeout=60)
        assert listed.returncode == 0, listed.stderr
        (row,) = json.loads(listed.stdout)
        assert (row["ref"], row["host"], row["count"], row["active"]) == (raised.ref, "sw-core",
                                                                           3, True)

        # An operator acknowledges it: the correlator publishes who did (the broker
        # user the command logged in as, guest: an operator by default).
        ack = subprocess.run([sys.executable, "-m", "centaure.cli", "alarms", "ack",
                              str(raised.ref), "--note", "on it", "-c",
                              str(corr_ini)], capture_output=True, text=True, cwd=ROOT,
                             timeout=60)
        assert ack.returncode == 0, ack.stderr
        (acked,) = read_alarms(alarm_queue, 1)
        assert (acked.state, acked.ref, acked.acked_by) == ("updated", raised.ref, "guest")
        # The command carries the user the CLI logged in as, checked by the broker.
        seen = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            method, props, body = seen.channel().basic_get(f"{prefix}.commands_seen",
                                                           auto_ack=True)
        finally:
            seen.close()
        assert method is not None, "the ack command never reached the alarm_command exchange"
        command = messages.decode(body, expected_type="alarm_command")
        assert (command.action, command.ref, command.user) == ("ack", raised.ref, "guest")
        assert (props.user_id, props.app_id) == ("guest", "cli")

        snmptrap(LINK_UP, 103)
        (cleared,) = read_alarms(alarm_queue, 1)
        assert (cleared.state, cleared.ref, cleared.count) == ("cleared", raised.ref, 3)
        assert cleared.cleared_at is not None

        # The writer's tables agree: the current state and the three transitions.
        engine = sa.create_engine(MARIADB_URL)
        try:
            deadline = time.monotonic() + 20
            while True:
                with engine.connect() as c:
                    current = c.execute(sa.text(
                        f"SELECT ref, state, count FROM {tables['db']}alarms")).all()
                    history = c.execute(sa.text(
                        f"SELECT state, count FROM {tables['db']}alarm_history "
                        "ORDER BY ts, id")).all()
                if len(history) == 4 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        finally:
            engine.dispose()
        assert [tuple(r) for r in current] == [(raised.ref, "cleared", 3)]
        assert [tuple(r) for r in history] == [("raised", 1), ("updated", 3), ("updated", 3),
                                               ("cleared", 3)]
    finally:
        for d in daemons:
            d.stop()


def raise_event(i: int) -> messages.Event:
    """Raise number ``i``: 100 alarms (20 hosts x 5 keys), in turn."""
    return messages.Event(ts=TS + i, source="traps@n1", host=f"h{i % 20}", address="10.0.0.1",
                          snmp_version="v2c", trap_oid=LINK_DOWN, name="linkDown",
                          severity="major", varbinds=[], message="down", action="raise",
                          alarm="linkDown", key=f"k{(i // 20) % 5}")


def publish_events(prefix: str, events: list[tuple[str, messages.Event]]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.confirm_delivery()
    for mid, e in events:
        ch.basic_publish(f"{prefix}.event", f"event.{e.host}", messages.encode(e),
                         pika.BasicProperties(message_id=mid, type="event", delivery_mode=2))
    conn.close()


def stored_counts(url: str, prefix: str) -> dict[tuple[str, str], tuple[int, bool]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            rows = c.execute(sa.text(f"SELECT host, identity, count, active FROM {prefix}alarms"))
            return {(h, k): (n, bool(a)) for h, k, n, a in rows}
    finally:
        engine.dispose()


def unsettled(queue: str) -> int:
    """Messages of ``queue`` ready or delivered and not yet acked (``rabbitmqctl``)."""
    for line in rabbitmqctl("list_queues", "name", "messages").splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == queue:
            return int(fields[1])
    raise AssertionError(f"no queue {queue}")


def wait_drained(daemon: TwistdDaemon, queue: str, timeout: float = 60) -> None:
    """The queue is empty and the correlator has nothing pending."""
    deadline = time.monotonic() + timeout
    while True:
        _, body = daemon.health()
        pending = body.get("connectors", {}).get("correlator", {}).get("pending", 1)
        # "pending" leaves out the batches being committed: wait until every
        # message is acked too (acked = committed and its alarms published).
        if queue_depth(queue) == 0 and pending == 0 and unsettled(queue) == 0:
            return
        assert daemon.alive(), daemon.logs()[-3000:]
        assert time.monotonic() < deadline, f"not drained:\n{daemon.logs()[-3000:]}"
        time.sleep(0.2)


def test_kill_9_mid_stream_resumes_with_exact_counts(tmp_path, prefix, tables):
    n = 10000
    declare_consumer_queues(prefix, "correlator")
    alarm_queue = declare_check_queue(prefix, "alarm")
    publish_events(prefix, [(f"e{i}", raise_event(i)) for i in range(n)])
    ini, port = correlator_settings(tmp_path, prefix, tables, batch_size="200")
    daemon = TwistdDaemon("centaure-correlator", ini, port)
    try:
        daemon.wait_health(lambda s, b: b.get("connectors", {}).get("correlator", {})
                           .get("alarms", {}).get("messages", 0) >= 600, timeout=60)
        daemon.kill()  # mid-stream: some batches committed, others not acked yet
        assert queue_depth(f"{prefix}.correlator") > 0
        daemon.start()
        daemon.wait_health(ready)
        wait_drained(daemon, f"{prefix}.correlator")
        counts = stored_counts(MARIADB_URL, tables["correlator"])
        assert len(counts) == 100
        assert set(counts.values()) == {(n // 100, True)}, sorted(set(counts.values()))
        alarms = read_alarms(alarm_queue, 100)
        raised = [a.ref for a in alarms if a.state == "raised"]
        assert len(raised) == len(set(raised)) == 100  # none raised twice
    finally:
        daemon.stop()


def test_database_stopped_under_the_correlator(tmp_path, prefix, tables):
    server = private_mariadb(str(tmp_path / "mariadb"))
    try:
        declare_consumer_queues(prefix, "correlator")
        ini, port = correlator_settings(tmp_path, prefix, tables, db_url=server.url)
        daemon = TwistdDaemon("centaure-correlator", ini, port)
        daemon.wait_health(ready)
        publish_events(prefix, [(f"e{i}", raise_event(i)) for i in range(500)])
        wait_drained(daemon, f"{prefix}.correlator")
        server.stop()
        publish_events(prefix, [(f"e{i}", raise_event(i)) for i in range(500, 1000)])
        body = daemon.wait_health(lambda s, b: s == 503)
        assert body["connectors"]["correlator"]["state"] == "database unavailable"
        time.sleep(1.5)
        assert daemon.alive()
        server.start()
        daemon.wait_health(lambda s, b: s == 200 and ready(s, b))
        wait_drained(daemon, f"{prefix}.correlator")
        counts = stored_counts(server.url, tables["correlator"])
        assert set(counts.values()) == {(10, True)} and len(counts) == 100
        daemon.stop()
    finally:
        server.stop()


def test_topology_cycle_stops_start_up_with_one_line(tmp_path, prefix, tables):
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"devices": [
        {"name": "a", "address": "10.0.0.1", "device_type": "router", "parent": "b"},
        {"name": "b", "address": "10.0.0.2", "device_type": "router", "parent": "a"}]}))
    ini, _ = correlator_settings(tmp_path, prefix, tables)
    r = subprocess.run([f"{os.path.dirname(sys.executable)}/twistd", "-n", "--pidfile=",
                        "centaure-correlator", "-c", str(ini)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out
    assert "centaure-correlator" in out and "cycle" in out, out
