"""``twistd centaure-db`` fed malformed messages, with the real RabbitMQ and MariaDB.

What an operator checks: a flood of 2,000 malformed messages all end in the
dead-letter queue with their reason, the log says so in one warning line at
most every 10 s (the first at once, then the counts), /metrics counts every
one, and the daemon keeps running and stores the next valid message. When
the dead letters cannot go anywhere (the dead-letter queue full and
refusing, the publisher's buffer full and refusing the newest), no message
is lost: each is put back on the writer's queue and dead-lettered once
there is room again.
"""

from __future__ import annotations

import re
import time
import uuid

import pika
import pytest

from connector import messages
from connector.consumer import QUEUE_HEADER, REASON_HEADER
from tests.conftest import AMQP_URL, MARIADB_URL, settings_text
from tests.integration.daemons import TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port
from tests.integration.support import (
    declare_consumer_queues, drain, drop_prefixed_tables, queue_depth,
)
from tests.integration.test_publisher_drop_log import assert_one_per_10_s, bus_metrics, lines_with

pytestmark = pytest.mark.integration

DEAD_LINE = "messages dead-lettered: "
NOT_DEAD_LINE = "messages not dead-lettered"
TS = 1_790_000_000.0


@pytest.fixture
def table_prefix():
    p = f"f{uuid.uuid4().hex[:10]}_"
    yield p
    drop_prefixed_tables(MARIADB_URL, p)


def writer(tmp_path, prefix: str, table_prefix: str, **buffer: str) -> tuple[TwistdDaemon, int]:
    port = free_tcp_port()
    ini = tmp_path / "db.ini"
    ini.write_text(settings_text(prefix, tmp_path, connector={"http_port": str(port)},
                                 database={"url": MARIADB_URL}, buffer=buffer,
                                 db={"table_prefix": table_prefix, "batch_interval": "50ms"}))
    daemon = TwistdDaemon("centaure-db", ini, port)
    daemon.wait_health(lambda status, body: status == 200, timeout=60)
    return daemon, port


def malformed(i: int) -> bytes:
    """A body cut short: not JSON. Numbered, to tell them apart in the dead-letter queue."""
    return b'{"type": "perf", "v": 1, "seq": %d, "host": "h' % i


def publish(prefix: str, bodies: list[tuple[str, bytes]]) -> None:
    """Publish (routing key, body) pairs to the perf exchange, with confirms."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.confirm_delivery()
    for key, body in bodies:
        ch.basic_publish(f"{prefix}.perf", key, body,
                         pika.BasicProperties(delivery_mode=2, type="perf",
                                              message_id=uuid.uuid4().hex))
    conn.close()


def valid_perf() -> messages.Perf:
    return messages.Perf(ts=TS, source="snmp@n1", host="h1", address="10.0.0.1",
                         device_type="router",
                         metrics=[messages.Metric(name="ifInOctets", index="1", value=42.0,
                                                  kind="counter", oid="1.3.6.1.2.1.2.2.1.10")])


def samples(table_prefix: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(MARIADB_URL)
    try:
        with engine.connect() as c:
            return c.execute(sa.text(f"SELECT COUNT(*) FROM {table_prefix}samples")).scalar_one()
    finally:
        engine.dispose()


def wait(predicate, what: str, daemon: TwistdDaemon, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert daemon.alive(), f"the daemon died:\n{daemon.logs()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what}:\n{daemon.logs()[-3000:]}"
        time.sleep(0.2)


def consumer_warnings(logs: str) -> int:
    """Warning lines of the consumers (module connector.consumer, its classes)."""
    return len(re.findall(r"\[connector\.consumer[.\w]*#warn\]", logs))


def told_counts(lines: list[tuple], reason: str) -> int:
    return sum(int(m[1]) for _, line in lines if (m := re.search(rf"(\d+) {reason}\b", line)))


def test_a_flood_of_malformed_messages_is_dead_lettered_and_told_once_per_10_s(
        tmp_path, prefix, table_prefix):
    declare_consumer_queues(prefix, "db", dead_letters=True)
    daemon, port = writer(tmp_path, prefix, table_prefix)
    try:
        publish(prefix, [(f"perf.h{i}", malformed(i)) for i in range(2000)])
        wait(lambda: queue_depth(f"{prefix}.dead") == 2000, "2000 dead letters", daemon)
        # One line at once, another one if the flood lasted 10 s: never a line per message.
        assert consumer_warnings(daemon.logs()) <= 2
        # The first line at once; the 1,999 others in the next one, 10 s later at most.
        wait(lambda: told_counts(lines_with(daemon.logs(), DEAD_LINE), "invalid") == 2000,
             "the counts told", daemon, timeout=30)
        logs = daemon.logs()
        told = lines_with(logs, DEAD_LINE)
        print(f"{len(told)} lines for 2000 malformed messages")
        assert_one_per_10_s(told)
        assert len(told) <= 3, told  # everything came within a few seconds
        assert "messages dead-lettered: 1 invalid (totals: invalid 1); first invalid: invalid " \
               f"JSON: Input data was truncated (queue {prefix}.db, routing key 'perf.h0'," \
            in told[0][1]
        assert re.search(r"messages dead-lettered: \d+ invalid \(totals: invalid 2000\); first "
                         r"invalid: invalid JSON", told[-1][1]), told[-1][1]
        # No other warning of the consumer (there was one per message).
        assert consumer_warnings(logs) == len(told)
        assert bus_metrics(port)["invalid"] == bus_metrics(port)["dead_lettered"] == 2000

        # Still running, and the next valid message is stored.
        publish(prefix, [("perf.h1", messages.encode(valid_perf()))])
        wait(lambda: samples(table_prefix) == 1, "the valid message stored", daemon)
        assert queue_depth(f"{prefix}.db") == 0
    finally:
        daemon.stop()
    letters = drain(f"{prefix}.dead", idle=0.5)
    assert sorted(body for body, _ in letters) == sorted(malformed(i) for i in range(2000))
    assert all(props.headers[REASON_HEADER].startswith("invalid message: invalid JSON") and
               props.headers[QUEUE_HEADER] == f"{prefix}.db" for _, props in letters)


def test_dead_letters_refused_everywhere_are_put_back_and_none_is_lost(
        tmp_path, prefix, table_prefix):
    """The dead-letter queue holds 10 and refuses more (the broker nacks); the writer's
    buffer holds 5 and refuses the newest: dead letters beyond that are refused, and
    their originals wait on the writer's queue until the test makes room."""
    declare_consumer_queues(prefix, "db")
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.exchange_declare(exchange=f"{prefix}.dead", exchange_type="topic", durable=True)
    ch.queue_declare(queue=f"{prefix}.dead", durable=True,
                     arguments={"x-max-length": 10, "x-overflow": "reject-publish"})
    ch.queue_bind(queue=f"{prefix}.dead", exchange=f"{prefix}.dead", routing_key="#")
    conn.close()
    daemon, port = writer(tmp_path, prefix, table_prefix, max_messages="5",
                          policy="refuse_newest")
    try:
        publish(prefix, [(f"perf.h{i}", malformed(i)) for i in range(200)])
        wait(lambda: bus_metrics(port).get("dropped_refused", 0) >= 100,
             "dead letters refused by the full buffer", daemon)
        assert daemon.alive()
        # Room in the dead-letter queue again, 10 at a time: every message gets there.
        seen: set[bytes] = set()
        deadline = time.monotonic() + 120
        while len(seen) < 200:
            assert daemon.alive(), daemon.logs()[-3000:]
            assert time.monotonic() < deadline, (len(seen), daemon.logs()[-3000:])
            seen |= {body for body, _ in drain(f"{prefix}.dead", idle=0.2)}
        assert seen == {malformed(i) for i in range(200)}
        wait(lambda: queue_depth(f"{prefix}.db") == 0 and bus_metrics(port)["dead_lettered"]
             >= 200, "the writer's queue emptied", daemon)
        logs = daemon.logs()
        refused = lines_with(logs, NOT_DEAD_LINE)
        assert refused and assert_one_per_10_s(refused) is None
        assert "buffer full (totals: dead_letter_failed_buffer_full" in refused[0][1]
        assert "could not dead-letter" not in logs
    finally:
        daemon.stop()
