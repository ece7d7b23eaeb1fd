"""Two ``twistd centaure-db`` on one queue (competing consumers), one killed with -9.

5,000 ``perf`` messages with distinct ids (one sample each, distinct
timestamps) are published with confirms while two SQL writers on two nodes
consume the same queue into the same MariaDB tables. Once both are writing,
one is killed with -9 in the middle of the stream: what it held unacked is
redelivered to the other. Every message ends in the samples table exactly
once (no loss, no duplicate row) and the surviving writer keeps running.
"""

from __future__ import annotations

import threading
import time
import uuid

import pika
import pytest
import sqlalchemy as sa

from connector import messages
from tests.conftest import AMQP_URL, MARIADB_URL, settings_text
from tests.integration.daemons import TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port
from tests.integration.support import declare_consumer_queues, drop_prefixed_tables, queue_depth

pytestmark = pytest.mark.integration
N = 5000
TS = 1_790_000_000.0
HOSTS = 10


@pytest.fixture
def table_prefix():
    p = f"w{uuid.uuid4().hex[:10]}_"
    yield p
    drop_prefixed_tables(MARIADB_URL, p)


def perf(i: int) -> messages.Perf:
    """Message ``i``: one sample whose value is ``i``, at a time no other message of its host has."""
    return messages.Perf(ts=TS + i, source="snmp@n1", host=f"h{i % HOSTS}", address="10.0.0.1",
                         device_type="router",
                         metrics=[messages.Metric(name="seq", value=i, kind="gauge",
                                                  oid="1.3.6.1.4.1.1")])


def publish_paced(prefix: str, n: int, seconds: float, done: list) -> None:
    """Publish perf 0..n-1 with confirms over about ``seconds``; append n to ``done`` at the end."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.confirm_delivery()
    chunk = 100
    t0 = time.monotonic()
    for start in range(0, n, chunk):
        for i in range(start, min(n, start + chunk)):
            m = perf(i)
            ch.basic_publish(f"{prefix}.perf", messages.routing_key(m), messages.encode(m),
                             pika.BasicProperties(message_id=f"p{i}", type="perf",
                                                  delivery_mode=2,
                                                  content_type="application/json"))
        ahead = (start + chunk) / n * seconds - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
    conn.close()
    done.append(n)


def samples(table_prefix: str) -> tuple[int, int]:
    """(rows, distinct values) of the samples table."""
    engine = sa.create_engine(MARIADB_URL)
    try:
        with engine.connect() as c:
            return tuple(c.execute(sa.text(
                f"SELECT COUNT(*), COUNT(DISTINCT value) FROM {table_prefix}samples")).one())
    finally:
        engine.dispose()


def rows_written(daemon: TwistdDaemon) -> int:
    _status, body = daemon.health()
    return sum(body.get("connectors", {}).get("db", {}).get("rows_by_table", {}).values())


def ready(status: int, body: dict) -> bool:
    return status == 200 and body.get("connectors", {}).get("db", {}).get("schema") == "ready"


def test_two_writers_one_killed_store_every_message_once(tmp_path, prefix, table_prefix):
    declare_consumer_queues(prefix, "db", dead_letters=True)
    writers = []
    for node in ("dbA", "dbB"):
        folder = tmp_path / node
        folder.mkdir()
        port = free_tcp_port()
        (folder / "settings.ini").write_text(settings_text(
            prefix, folder, connector={"node": node, "http_port": str(port)},
            database={"url": MARIADB_URL},
            db={"table_prefix": table_prefix, "batch_interval": "50ms"}))
        writers.append(TwistdDaemon("centaure-db", folder / "settings.ini", port))
    victim, survivor = writers
    publisher = None
    try:
        for w in writers:
            w.wait_health(ready)
        done: list = []
        publisher = threading.Thread(target=publish_paced, args=(prefix, N, 4.0, done),
                                     daemon=True)
        publisher.start()
        # Both writers take their share; kill one while messages still flow.
        deadline = time.monotonic() + 20
        while not (rows_written(victim) >= 300 and rows_written(survivor) > 0):
            assert time.monotonic() < deadline, (rows_written(victim), rows_written(survivor))
            assert not done, "everything was published before both writers wrote"
            time.sleep(0.05)
        _status, body = victim.health()
        held = body["connectors"]["db"]["pending_messages"]
        victim.kill()
        assert not done, "the kill came after the last message was published"
        publisher.join(30)
        assert done == [N]

        deadline = time.monotonic() + 20
        while True:
            rows, distinct = samples(table_prefix)
            if rows >= N and queue_depth(f"{prefix}.db") == 0:
                break
            assert survivor.alive(), survivor.logs()[-3000:]
            assert time.monotonic() < deadline, \
                f"{rows} rows of {N} (the killed writer held {held})\n{survivor.logs()[-3000:]}"
            time.sleep(0.2)
        survivor.wait_health(lambda s, b: s == 200
                             and b["connectors"]["db"]["pending_messages"] == 0)
        time.sleep(0.5)
        assert samples(table_prefix) == (N, N)
        print(f"killed writer held {held} unacked messages; survivor wrote "
              f"{rows_written(survivor)} rows")
        engine = sa.create_engine(MARIADB_URL)
        try:
            with engine.connect() as c:
                values = {int(v) for (v,) in c.execute(sa.text(
                    f"SELECT value FROM {table_prefix}samples"))}
                devices = c.execute(sa.text(
                    f"SELECT COUNT(*) FROM {table_prefix}devices")).scalar_one()
        finally:
            engine.dispose()
        assert values == set(range(N))
        assert devices == HOSTS
        assert survivor.alive()
    finally:
        if publisher is not None:
            publisher.join(30)
        for w in writers:
            w.stop()



def test_a_metric_another_writer_is_creating_is_found(table_prefix):
    """Writer B inserts a metric that writer A has inserted and not yet committed.

    B's insert-ignore waits for A's commit and skips the row; B must still
    find the metric's id although its transaction's snapshot (MariaDB
    REPEATABLE READ, taken by its first SELECT, of its new device) predates
    A's commit. (A device cannot meet this: it is inserted before any SELECT.)
    """
    from centaure_shared.storage.schema import create_all, make_schema
    from connector.consumer import Delivery
    from connector_db.store import NormalizedStore

    engine = sa.create_engine(MARIADB_URL)
    schema = make_schema(table_prefix)
    create_all(engine, schema)
    try:
        store = NormalizedStore(engine, schema)
        m = messages.Perf(ts=TS, source="snmp@n1", host="h-new", address="10.0.0.1",
                          device_type="router", metrics=[messages.Metric(
                              name="contended", value=2, kind="gauge", oid="1.3.6.1")])
        item = store.prepare(m, Delivery(b"", "x", "perf.h-new", message_id="p1"))
        with engine.connect() as a:
            a_tx = a.begin()
            a.execute(schema.metrics.insert().values(name="contended", kind="gauge"))
            result: list = []

            def write_b() -> None:
                try:
                    result.append(store.write([item]))
                except Exception as e:  # reported below
                    result.append(e)

            b = threading.Thread(target=write_b)
            b.start()
            time.sleep(0.5)  # B waits for A's row
            assert not result, result
            a_tx.commit()
            b.join(30)
        assert result and isinstance(result[0], dict), result
        with engine.connect() as c:
            assert c.execute(sa.text(
                f"SELECT COUNT(*) FROM {table_prefix}samples")).scalar_one() == 1
    finally:
        engine.dispose()
