"""``twistd centaure-db`` with the real RabbitMQ and a real MariaDB.

What an operator checks: every message published is in the tables exactly
once, even when the broker redelivers it; a message no column can hold is in
the dead-letter queue with the reason, and the rest are stored; the database
crashing or being restarted under the writer loses nothing, duplicates
nothing, turns /health to 503 meanwhile, and the daemon keeps running.
The restart tests use a MariaDB server of their own (``private_mariadb``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pika
import pytest
import sqlalchemy as sa

from connector import messages
from connector.consumer import REASON_HEADER
from tests.conftest import AMQP_URL, MARIADB_URL, ROOT, settings_text
from tests.integration.private_mariadb import free_tcp_port, private_mariadb
from tests.integration.support import declare_consumer_queues, drop_prefixed_tables, queue_depth

pytestmark = pytest.mark.integration
BIN = os.path.dirname(sys.executable)
TS = 1_790_000_000.0
METRICS = 50


class Daemon:
    """A running ``twistd centaure-db`` and how to look at it."""

    def __init__(self, tmp_path, prefix: str, db_url: str, table_prefix: str,
                 retention: dict | None = None, **db) -> None:
        self.tmp_path = tmp_path
        self.port = free_tcp_port()
        self.url = db_url
        self.table_prefix = table_prefix
        text = settings_text(prefix, tmp_path,
                             connector={"http_port": str(self.port)},
                             database={"url": db_url},
                             db={"table_prefix": table_prefix, "batch_interval": "50ms",
                                 "retry_initial": "0.2s", "retry_max": "1s", **db},
                             retention=retention or {})
        (tmp_path / "settings.ini").write_text(text)
        self.log_path = tmp_path / "twistd.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [f"{BIN}/twistd", "-n", "--pidfile=", "centaure-db", "-c",
             str(tmp_path / "settings.ini")], cwd=tmp_path, stdout=self.log,
            stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=ROOT))

    def logs(self) -> str:
        return self.log_path.read_text()

    def health(self) -> tuple[int, dict]:
        """(HTTP status, body) of /health; (0, {}) while nothing listens."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
        except OSError:
            return 0, {}

    def wait_health(self, status: int, timeout: float = 30, schema: str | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"the daemon died:\n{self.logs()}"
            code, body = self.health()
            db = body.get("connectors", {}).get("db", {})
            if code == status and (schema is None or db.get("schema") == schema):
                return body
            assert time.monotonic() < deadline, \
                f"/health stayed {code} {body} (wanted {status}):\n{self.logs()[-3000:]}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self.log.close()


@pytest.fixture
def run_daemon(tmp_path, prefix):
    started: list[Daemon] = []

    def run(db_url: str, table_prefix: str, **db) -> Daemon:
        d = Daemon(tmp_path, prefix, db_url, table_prefix, **db)
        started.append(d)
        return d

    yield run
    for d in started:
        d.stop()


@pytest.fixture
def shared_tables():
    """A table prefix in the shared MariaDB ``test`` database, dropped afterwards."""
    p = f"d{uuid.uuid4().hex[:10]}_"
    yield p
    drop_prefixed_tables(MARIADB_URL, p)


def perf(i: int, bad: bool = False) -> messages.Perf:
    metrics = [messages.Metric(name=f"m{k}", index=str(i % 3), value=float(i * 100 + k),
                               kind="gauge", oid=f"1.3.6.1.4.1.1.{k}") for k in range(METRICS)]
    if bad:  # a text value longer than any sample column holds
        metrics[7] = messages.Metric(name="descr", value="x" * 300, kind="text", oid="1.3.6.1")
    return messages.Perf(ts=TS + i, source="snmp@n1", host=f"h{i % 10}", address="10.0.0.1",
                         device_type="router", metrics=metrics)


def event(i: int) -> messages.Event:
    return messages.Event(ts=TS + i, source="traps@n1", host=f"h{i % 10}", address="10.0.0.1",
                          snmp_version="v2c", trap_oid="1.3.6.1.6.3.1.1.5.3", name="linkDown",
                          severity="major", varbinds=[], message=f"link {i} down")


def publish(prefix: str, items: list[tuple[str, messages.MessageBase]]) -> None:
    """Publish (message_id, message) pairs with confirms, as the connectors do."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.confirm_delivery()
    for mid, m in items:
        ch.basic_publish(f"{prefix}.{m.msg_type}", f"{m.msg_type}.{m.host}", messages.encode(m),
                         pika.BasicProperties(message_id=mid, type=m.msg_type, delivery_mode=2,
                                              content_type="application/json"))
    conn.close()


def counts(url: str, table_prefix: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return {t: c.execute(sa.text(f"SELECT COUNT(*) FROM {table_prefix}{t}")).scalar_one()
                    for t in ("samples", "events", "devices", "metrics")}
    finally:
        engine.dispose()


def wait_counts(url: str, table_prefix: str, want: dict[str, int], daemon: Daemon,
                timeout: float = 60) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        got = counts(url, table_prefix)
        if all(got[k] >= v for k, v in want.items()):
            return got
        assert daemon.proc.poll() is None, f"the daemon died:\n{daemon.logs()}"
        assert time.monotonic() < deadline, f"stored {got}, wanted {want}:\n{daemon.logs()[-3000:]}"
        time.sleep(0.2)


def test_every_message_stored_once_and_the_unstorable_one_dead_lettered(
        run_daemon, prefix, shared_tables):
    declare_consumer_queues(prefix, "db", dead_letters=True)
    daemon = run_daemon(MARIADB_URL, shared_tables)
    daemon.wait_health(200, schema="ready")
    batch = [(f"p{i}", perf(i)) for i in range(300)] + [(f"e{i}", event(i)) for i in range(20)]
    publish(prefix, batch)
    publish(prefix, [("bad-1", perf(999, bad=True))])
    publish(prefix, batch)  # every message a second time: a replay after an outage
    want = {"samples": 300 * METRICS, "events": 20, "devices": 10, "metrics": METRICS}
    wait_counts(MARIADB_URL, shared_tables, want, daemon)
    # Everything consumed: the queue is empty, and nothing more was written.
    deadline = time.monotonic() + 30
    while queue_depth(f"{prefix}.db") and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    assert counts(MARIADB_URL, shared_tables) == want
    dead = []
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    # An empty queue does not mean the bad message's batch is over (delivered,
    # not yet acked): wait for its dead letter, then 2 s more for any other.
    deadline = time.monotonic() + 30
    for method, props, body in ch.consume(f"{prefix}.dead", inactivity_timeout=2):
        if method is None:
            if dead or time.monotonic() > deadline:
                break
            continue
        dead.append((props.message_id, props.headers[REASON_HEADER]))
        ch.basic_ack(method.delivery_tag)
    conn.close()
    assert len(dead) == 1 and dead[0][0] == "bad-1", dead
    assert "longer than 255" in dead[0][1]
    body = daemon.wait_health(200)
    assert body["connectors"]["db"]["rejected"] == 1


def test_database_crash_and_restart_lose_and_duplicate_nothing(run_daemon, prefix, tmp_path):
    server = private_mariadb(str(tmp_path / "mariadb"))
    try:
        declare_consumer_queues(prefix, "db", dead_letters=True)
        daemon = run_daemon(server.url, "c_")
        daemon.wait_health(200, schema="ready")
        publish(prefix, [(f"p{i}", perf(i)) for i in range(100)])
        wait_counts(server.url, "c_", {"samples": 100 * METRICS}, daemon)

        for outage, start in ((server.kill, 100), (server.stop, 200)):
            outage()
            publish(prefix, [(f"p{i}", perf(i)) for i in range(start, start + 100)])
            body = daemon.wait_health(503)
            assert body["connectors"]["db"]["degraded"] is True
            time.sleep(1.5)  # several retries while the server is away
            assert daemon.proc.poll() is None
            # Nothing was acked: the messages wait in the queue or the prefetch window.
            assert queue_depth(f"{prefix}.db") + body["connectors"]["db"]["pending_messages"] > 0
            server.start()
            wait_counts(server.url, "c_", {"samples": (start + 100) * METRICS}, daemon)
            daemon.wait_health(200)
        time.sleep(0.5)
        assert counts(server.url, "c_")["samples"] == 300 * METRICS
        assert "database unavailable" in daemon.logs()
    finally:
        server.stop()


def test_starts_while_the_database_is_down_and_catches_up(run_daemon, prefix, tmp_path):
    server = private_mariadb(str(tmp_path / "mariadb"))
    try:
        server.stop()
        declare_consumer_queues(prefix, "db", dead_letters=True)
        publish(prefix, [(f"p{i}", perf(i)) for i in range(50)])
        daemon = run_daemon(server.url, "c_")
        daemon.wait_health(503, schema="waiting")
        time.sleep(1.5)  # several attempts, each refused
        code, body = daemon.health()
        assert code == 503 and body["connectors"]["db"]["schema"] == "waiting"
        assert "Can't connect" in body["connectors"]["db"]["last_error"]
        assert queue_depth(f"{prefix}.db") == 50  # nothing taken before it can be written
        server.start()
        daemon.wait_health(200, schema="ready")
        wait_counts(server.url, "c_", {"samples": 50 * METRICS}, daemon)
    finally:
        server.stop()


@pytest.mark.parametrize("section, values, expected", [
    ("database", {"url": "nosuchdriver://u:hunter2@h/db"}, "[database] url"),
    ("db", {"layout": "sideways"}, "layout"),
    ("db", {"table_prefix": "Bad-Prefix"}, "table_prefix"),
])
def test_bad_configuration_stops_with_one_clear_line(tmp_path, prefix, section, values, expected):
    (tmp_path / "settings.ini").write_text(settings_text(prefix, tmp_path, **{section: values}))
    r = subprocess.run([f"{BIN}/twistd", "-n", "--pidfile=", "centaure-db", "-c",
                        str(tmp_path / "settings.ini")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert expected in out and "Traceback" not in out, out
    assert "hunter2" not in out


def test_per_device_layout_names_tables_after_inventory_ids(run_daemon, prefix, tmp_path):
    """The legacy per-device layout: ``<metric>_<device id>`` tables, ids from the inventory."""
    site = f"s{uuid.uuid4().hex[:8]}"
    (tmp_path / "inventory.yaml").write_text(
        "devices:\n  - {name: h1, address: 10.0.0.1, device_type: router, id: '41'}\n")
    try:
        declare_consumer_queues(prefix, "db", dead_letters=True)
        daemon = run_daemon(MARIADB_URL, f"{site}_", layout="per_device",
                            table_template=f"{site}_{{metric}}_{{device}}")
        daemon.wait_health(200, schema="ready")
        publish(prefix, [(f"p{i}", perf(i)) for i in (1, 11, 2)] * 2)  # h1 twice, h2 once
        engine = sa.create_engine(MARIADB_URL)
        try:
            deadline = time.monotonic() + 30
            while True:
                names = set(sa.inspect(engine).get_table_names())
                if {f"{site}_m0_41", f"{site}_m49_h2"} <= names:
                    break
                assert time.monotonic() < deadline, sorted(n for n in names if site in n)
                time.sleep(0.2)
            deadline = time.monotonic() + 30
            while True:
                with engine.connect() as c:
                    rows = c.execute(sa.text(
                        f"SELECT datetime, metric_index, value FROM {site}_m3_41 "
                        "ORDER BY datetime")).all()
                if len(rows) == 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            # perf(1) and perf(11) for h1 (id 41), each once despite the replay.
            assert [(r[0], r[1], r[2]) for r in rows] == [
                (int(TS) + 1, 1, "103.0"), (int(TS) + 11, 2, "1103.0")]
        finally:
            engine.dispose()
    finally:
        drop_prefixed_tables(MARIADB_URL, f"{site}_")


def test_writer_makes_the_partitions_ahead_at_start(run_daemon, shared_tables):
    """Tomorrow's partition (and partitions_ahead's) exist for samples and alarm history once the
    writer has started, even when no 'centaure db maintain' ran since the migration."""
    from connector_db import migrate, partitions

    engine = sa.create_engine(MARIADB_URL)
    tables = [f"{shared_tables}samples", f"{shared_tables}alarm_history"]
    try:
        migrate.upgrade(engine, shared_tables)
        now_ms = int(time.time() * 1000)
        with engine.begin() as c:
            for table in tables:
                later = [p.name for p in partitions.partitions(c, table)
                         if p.lower is not None and p.lower > now_ms]
                assert later, "the migration made partitions ahead"
                c.exec_driver_sql(f"ALTER TABLE {table} DROP PARTITION {', '.join(later)}")
        daemon = run_daemon(MARIADB_URL, shared_tables, retention={"partitions_ahead": "5d"})
        daemon.wait_health(200, schema="ready")
        deadline = time.monotonic() + 30
        for table in tables:
            while True:
                with engine.connect() as c:
                    uppers = [p.upper for p in partitions.partitions(c, table) if p.upper]
                if uppers and uppers[-1] > now_ms + 5 * 86_400_000:
                    break
                assert time.monotonic() < deadline, (
                    f"{table} partitions {uppers}:\n{daemon.logs()[-3000:]}")
                time.sleep(0.2)
        assert f"of {tables[1]}" in daemon.logs().split("time partitions made ahead: ")[1]
    finally:
        engine.dispose()
