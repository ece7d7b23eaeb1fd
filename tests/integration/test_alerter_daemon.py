"""``twistd centaure-alerter`` killed with -9 and restarted, with real RabbitMQ and MariaDB.

What an operator checks: polls cross a threshold on three hosts (three
``breached``); the alerter is killed with -9; while it is down the values of
two hosts recover (``centaure-db`` stores them, and they wait in the
alerter's queue too); restarted, it publishes those two ``recovered`` once
(from the saved breach status and the stored samples; the queued copies are
not evaluated again); later polls give their transitions once; killed and
restarted with nothing new, it publishes nothing. Every ``threshold`` message
is read from a queue bound to ``<prefix>.threshold``: each transition exactly
once, and the daemon alive at the end.
"""

from __future__ import annotations

import json
import time
import uuid

import pika
import pytest
import sqlalchemy as sa

from connector import messages
from tests.conftest import AMQP_URL, MARIADB_URL, settings_text
from tests.integration.daemons import TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port
from tests.integration.support import (
    collect,
    declare_check_queue, declare_consumer_queues, drop_prefixed_tables,
)

pytestmark = pytest.mark.integration

RULES = """\
- name: cpu-high
  when: {metric: cpuLoad, op: '>', value: 90}
"""
HOSTS = ("h0", "h1", "h2")
T = time.time() - 300          # recent: inside the start-up replay's hour


@pytest.fixture
def tables():
    tag = uuid.uuid4().hex[:8]
    names = {"db": f"w{tag}_", "alerter": f"a{tag}_"}
    yield names
    drop_prefixed_tables(MARIADB_URL, tuple(names.values()))


def poll(host: str, i: int, cpu: float) -> messages.Perf:
    return messages.Perf(ts=T + i, source="snmp@n1", host=host, address="10.0.0.1",
                         device_type="router",
                         metrics=[messages.Metric(name="cpuLoad", value=cpu, kind="gauge",
                                                  oid="1.3.6.1.4.1.1")])


def publish(prefix: str, perfs: list[messages.Perf]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.confirm_delivery()
    for p in perfs:
        ch.basic_publish(f"{prefix}.perf", messages.routing_key(p), messages.encode(p),
                         pika.BasicProperties(message_id=uuid.uuid4().hex, type="perf",
                                              delivery_mode=2))
    conn.close()


class Thresholds:
    """Every ``threshold`` message published, read as they come (all kept, repeats too)."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.got: list[tuple[str, messages.Threshold]] = []

    def read(self, want: int, timeout: float = 20, settle: float = 0.0) -> list[tuple]:
        """Wait for ``want`` messages in all, then ``settle`` seconds more for extras."""
        self.got += [(props.message_id, messages.decode(body, expected_type="threshold"))
                     for props, body in collect(self.queue, want - len(self.got), timeout, settle)]
        return [(t.host, t.state, round(t.ts - T)) for _, t in self.got]


def saved_breaches(tables: dict) -> dict[str, list]:
    engine = sa.create_engine(MARIADB_URL)
    try:
        with engine.connect() as c:
            rows = c.execute(sa.text(f"SELECT host, state FROM {tables['alerter']}eval_state"))
            return {h: [b[0] for b in json.loads(s)["breached"]] for h, s in rows}
    except sa.exc.ProgrammingError:
        return {}
    finally:
        engine.dispose()


def stored_samples(tables: dict) -> int:
    engine = sa.create_engine(MARIADB_URL)
    try:
        with engine.connect() as c:
            return c.scalar(sa.text(f"SELECT COUNT(*) FROM {tables['db']}samples"))
    except sa.exc.ProgrammingError:
        return 0
    finally:
        engine.dispose()


def wait(predicate, what: str, daemon: TwistdDaemon, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert daemon.alive(), daemon.logs()[-3000:]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def ready(status: int, body: dict) -> bool:
    return body.get("connectors", {}).get("alerter", {}).get("state") == "ready"


def test_kill_9_and_restart_publish_every_transition_once(tmp_path, prefix, tables):
    (tmp_path / "rules.yaml").write_text(RULES)
    declare_consumer_queues(prefix, "alerter", "db")
    check = Thresholds(declare_check_queue(prefix, "threshold"))
    common = {"database": {"url": MARIADB_URL},
              "db": {"table_prefix": tables["db"], "batch_interval": "20ms"},
              "alerter": {"table_prefix": tables["alerter"], "rules": "rules.yaml"}}
    port = free_tcp_port()
    (tmp_path / "alerter.ini").write_text(settings_text(
        prefix, tmp_path, connector={"http_port": str(port)}, **common))
    (tmp_path / "db.ini").write_text(settings_text(prefix, tmp_path, **common))
    writer = TwistdDaemon("centaure-db", tmp_path / "db.ini")
    alerter = TwistdDaemon("centaure-alerter", tmp_path / "alerter.ini", port)
    try:
        writer.wait_log("ready (schema")
        alerter.wait_health(ready)

        publish(prefix, [poll(h, 1, 95.0) for h in HOSTS])
        assert sorted(check.read(3)) == [(h, "breached", 1) for h in HOSTS]
        # Saved within a second of the breaches; then no clean stop at all.
        wait(lambda: saved_breaches(tables) == {h: ["cpu-high"] for h in HOSTS},
             "the breaches saved", alerter)
        alerter.kill()

        # Down: h0 and h2 recover, h1 stays over; the writer stores them.
        publish(prefix, [poll("h0", 2, 40.0), poll("h1", 2, 96.0), poll("h2", 2, 30.0)])
        wait(lambda: stored_samples(tables) == 6, "the samples stored", writer)
        assert check.read(3, settle=0.5)[3:] == []

        alerter.start()
        alerter.wait_health(ready)
        got = check.read(5, settle=1.5)
        assert sorted(got[3:]) == [("h0", "recovered", 2), ("h2", "recovered", 2)]
        _, body = alerter.health()
        assert body["connectors"]["alerter"]["state_saves"]["errors"] == 0

        # Up again: the next polls give their transitions, once.
        publish(prefix, [poll("h0", 3, 99.0), poll("h1", 3, 20.0), poll("h2", 3, 10.0)])
        got = check.read(7, settle=1.5)
        assert sorted(got[5:]) == [("h0", "breached", 3), ("h1", "recovered", 3)]
        wait(lambda: saved_breaches(tables) == {"h0": ["cpu-high"], "h1": [], "h2": []},
             "the new state saved", alerter)

        # Killed again with nothing new: the restart publishes nothing.
        alerter.kill()
        alerter.start()
        alerter.wait_health(ready)
        assert check.read(7, settle=2.0)[7:] == []

        # Every transition exactly once overall (no repeat, even under another id).
        assert len(check.got) == len({mid for mid, _ in check.got}) == 7
        assert len({(t.host, t.state, t.ts) for _, t in check.got}) == 7
        assert alerter.alive() and writer.alive()
    finally:
        alerter.stop()
        writer.stop()
