"""Polled alarm tables through the real poller and correlator, as an operator sees them.

``twistd -n centaure-snmp`` polls simulated Eltek-style power shelves (snmpsim,
see :mod:`tests.snmp.alarmtable`) every second and publishes each poll's
whole alarm table as an ``alarm_snapshot``; ``twistd -n centaure-correlator``
consumes them from its queue on the real RabbitMQ, keeps its state in the
shared MariaDB (tables of a unique ``[correlator] table_prefix``, dropped
afterwards) and publishes ``alarm`` messages, read back here from a queue
bound to ``<prefix>.alarm``. ``centaure alarms --json`` is what the operator
lists.

How the alarm table changes between polls: the test rewrites the snmpsim data
file the agent serves; snmpsim notices the new modification time on the next
request and answers from the new content (rows appear and vanish for real
GETBULK walks). Details in :mod:`tests.snmp.alarmtable`. A device "stops
answering" by stopping its snmpsim process, and answers again when it is
restarted on the same port.

1. A row gone from the table clears its alarm, a new row raises one; a
   standing row seen again publishes nothing.
2. A silent device raises ``unreachable`` and keeps its table's alarms (no
   snapshot is not an empty snapshot); back, ``unreachable`` clears and the
   table alarms are still active.
3. A child whose parent is unreachable gets its own ``unreachable`` alarm
   with ``cause_ref`` = the parent's alarm and the mask severity (warning);
   when the parent answers again the child's alarm is updated: no cause, its
   own severity (major) back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pika
import pytest
import yaml

from connector import messages
from connector_alarms.keys import alarm_ref
from tests.conftest import AMQP_URL, MARIADB_URL, ROOT, settings_text
from tests.integration.support import declare_consumer_queues, drop_prefixed_tables
from tests.snmp.alarmtable import DEVICE_TYPE, AlarmRow, AlarmTableAgent
from connector_snmp.profiles import SHIPPED_PROFILES_DIR

pytestmark = pytest.mark.integration

BIN = os.path.dirname(sys.executable)
PROFILES = SHIPPED_PROFILES_DIR
UNREACHABLE = "unreachable"

MAINS = AlarmRow(1, "MainsFault", 1, "AC mains voltage out of range on phase L2")
RECTIFIER = AlarmRow(2, "RectifierFault", 2, "Rectifier 3 failed")
FUSE = AlarmRow(3, "LoadFuseBlown", 3, "Load fuse 7 blown")


# --- the bus -------------------------------------------------------------------------------

class Reader:
    """Collects every message of a queue bound to ``<prefix>.<msg_type>`` (routing key ``#``).

    Declared before the daemons start, so nothing published is missed.
    """

    def __init__(self, prefix: str, msg_type: str) -> None:
        self.queue = f"{prefix}.check-{msg_type}"
        self.conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        self.ch = self.conn.channel()
        exchange = f"{prefix}.{msg_type}"
        self.ch.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
        self.ch.queue_declare(queue=self.queue, durable=True)
        self.ch.queue_bind(queue=self.queue, exchange=exchange, routing_key="#")
        self.seen: list = []

    def fetch(self) -> list:
        """Take what has arrived; returns everything seen so far, in order."""
        while True:
            method, _props, body = self.ch.basic_get(self.queue, auto_ack=True)
            if method is None:
                return self.seen
            self.seen.append(messages.decode(body))

    def close(self) -> None:
        try:
            self.conn.close()
        except pika.exceptions.AMQPError:
            pass


# --- the deployment -----------------------------------------------------------------------

class Deployment:
    """Inventory, settings, the poller and the correlator, and what they publish."""

    def __init__(self, tmp_path, prefix: str, table_prefix: str) -> None:
        self.tmp_path = tmp_path
        self.settings = str(tmp_path / "settings.ini")
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, object] = {}
        (tmp_path / "credentials.yaml").write_text(yaml.safe_dump(
            {"default": {"version": "v2c", "community": "__name__"}}))
        (tmp_path / "settings.ini").write_text(settings_text(
            prefix, tmp_path,
            inventory={"path": "inventory.yaml", "port_column": "port", "reload_interval": "0"},
            # A poll a second; a silent agent is declared unreachable after 0.3 s.
            snmp={"profiles": PROFILES, "credentials": "credentials.yaml", "interval": "1s",
                  "timeout": "300ms", "retries": "0"},
            database={"url": MARIADB_URL},
            # update_interval 0: nothing is held back; a short tick and batch
            # so that each poll's alarms come out within a fraction of a second.
            correlator={"table_prefix": table_prefix, "update_interval": "0",
                        "tick_interval": "200ms", "batch_interval": "20ms"}))
        # Read queues first (as bus-config would): the first poll's messages wait there.
        declare_consumer_queues(prefix, "correlator")
        self.alarms = Reader(prefix, "alarm")
        self.snapshots = Reader(prefix, "alarm_snapshot")

    def inventory(self, devices: list[dict]) -> None:
        (self.tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"devices": devices}))

    def start(self) -> None:
        for plugin in ("centaure-correlator", "centaure-snmp"):
            log = open(self.tmp_path / f"{plugin}.log", "w")
            self.logs[plugin] = log
            self.procs[plugin] = subprocess.Popen(
                [f"{BIN}/twistd", "-n", "--pidfile=", plugin, "-c", self.settings],
                cwd=self.tmp_path, stdout=log, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONPATH=ROOT))

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for log in self.logs.values():
            log.close()
        self.alarms.close()
        self.snapshots.close()

    def log_text(self) -> str:
        return "\n".join(f"--- {name} (last lines)\n"
                         + "".join((self.tmp_path / f"{name}.log").read_text()
                                   .splitlines(True)[-40:])
                         for name in self.procs)

    def wait(self, reader: Reader, done: Callable[[list], bool], what: str,
             timeout: float = 30.0) -> list:
        """Fetch from ``reader`` until ``done(seen)``; fail with the daemons' logs."""
        deadline = time.monotonic() + timeout
        while True:
            seen = reader.fetch()
            if done(seen):
                return seen
            for name, proc in self.procs.items():
                assert proc.poll() is None, f"{name} died:\n{self.log_text()}"
            if time.monotonic() > deadline:
                got = [(m.host, getattr(m, "name", ""), getattr(m, "state", ""))
                       for m in seen][-30:]
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                     f"last seen {got}\n{self.log_text()}")
            time.sleep(0.1)

    def wait_alarm(self, host: str, name: str, state: str, **fields) -> messages.Alarm:
        """The first alarm message seen for (``host``, ``name``, ``state``) and ``fields``."""
        def match(m: messages.Alarm) -> bool:
            return (m.host == host and m.name == name and m.state == state
                    and all(getattr(m, k) == v for k, v in fields.items()))

        seen = self.wait(self.alarms, lambda ms: any(match(m) for m in ms),
                         f"{host} {name} {state} {fields}")
        return next(m for m in seen if match(m))

    def wait_polls(self, host: str, n: int, unreachable: bool) -> None:
        """Wait for ``n`` more snapshots of ``host`` of the given kind, from now on."""
        def kind(m: messages.AlarmSnapshot) -> bool:
            return m.host == host and unreachable == any(a.key == UNREACHABLE for a in m.alarms)

        start = sum(kind(m) for m in self.snapshots.fetch())
        self.wait(self.snapshots, lambda ms: sum(kind(m) for m in ms) >= start + n,
                  f"{n} {'unreachable' if unreachable else 'table'} snapshots of {host}")

    def listed(self, *args: str) -> list[dict]:
        """``centaure alarms -c settings.ini --json [args]``, parsed."""
        out = subprocess.run([f"{BIN}/centaure", "alarms", "-c", self.settings, "--json", *args],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def wait_listed(self, done: Callable[[list[dict]], bool], what: str, *args: str,
                    timeout: float = 30.0) -> list[dict]:
        """``listed`` until ``done``: the state is committed before the alarm is published,
        but a later poll may already be on its way; wait rather than race."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.listed(*args)
            if done(rows):
                return rows
            assert time.monotonic() < deadline, f"centaure alarms never showed {what}: {rows}"
            time.sleep(0.2)


@pytest.fixture
def deployment(tmp_path, prefix) -> Iterator[Deployment]:
    table_prefix = f"c{uuid.uuid4().hex[:10]}_"
    d = Deployment(tmp_path, prefix, table_prefix)
    try:
        yield d
    finally:
        d.stop()
        # <prefix>alarms, hosts, outbox, alembic_version (and anything later added).
        drop_prefixed_tables(MARIADB_URL, table_prefix)


@pytest.fixture
def agents() -> Iterator[Callable[..., AlarmTableAgent]]:
    """Make shelf agents (started); every one is stopped and removed afterwards."""
    made: list[AlarmTableAgent] = []

    def make(community: str, rows=()) -> AlarmTableAgent:
        agent = AlarmTableAgent(community, rows)
        made.append(agent)
        agent.start()
        return agent

    yield make
    for agent in made:
        agent.close()


def device(agent: AlarmTableAgent, parent: str | None = None) -> dict:
    d = {"name": agent.community, "address": "127.0.0.1", "port": agent.port,
         "device_type": DEVICE_TYPE}
    if parent:
        d["parent"] = parent
    return d


def of(alarms: list[messages.Alarm], host: str) -> list[tuple[str, str]]:
    """(name, state) of ``host``'s alarm messages, in order."""
    return [(m.name, m.state) for m in alarms if m.host == host]


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in rows}


# --- the tests ----------------------------------------------------------------------------

def test_rows_appearing_and_vanishing_raise_and_clear(deployment, agents):
    shelf = agents("shelf1", [MAINS])
    deployment.inventory([device(shelf)])
    deployment.start()

    mains = deployment.wait_alarm("shelf1", "MainsFault", "raised")
    assert (mains.severity, mains.origin, mains.count) == ("critical", "poll", 1)
    assert mains.message == MAINS.message
    assert mains.ref == alarm_ref("shelf1", "MainsFault", "alarmTable:1")
    # The same table polled again: a standing alarm, nothing new to say.
    deployment.wait_polls("shelf1", 2, unreachable=False)
    assert of(deployment.alarms.fetch(), "shelf1") == [("MainsFault", "raised")]

    # Mains back, a rectifier fails: row 1 gone, row 2 new, in the next poll.
    shelf.set_rows([RECTIFIER])
    rect = deployment.wait_alarm("shelf1", "RectifierFault", "raised")
    cleared = deployment.wait_alarm("shelf1", "MainsFault", "cleared")
    assert rect.severity == "major" and rect.message == RECTIFIER.message
    assert cleared.ref == mains.ref and cleared.cleared_at is not None
    deployment.wait_polls("shelf1", 2, unreachable=False)
    # Both come from one snapshot: their relative order is not part of the contract.
    seen = of(deployment.alarms.fetch(), "shelf1")
    assert seen[0] == ("MainsFault", "raised")
    assert sorted(seen[1:]) == [("MainsFault", "cleared"), ("RectifierFault", "raised")]

    # What the operator lists: the rectifier only; with --all, mains cleared by the poll.
    active = deployment.listed()
    assert [(r["host"], r["name"], r["severity"], r["active"]) for r in active] == [
        ("shelf1", "RectifierFault", "major", True)]
    assert active[0]["ref"] == rect.ref and active[0]["origin"] == "poll"
    everything = by_name(deployment.listed("--all"))
    assert everything["MainsFault"]["active"] is False
    assert everything["MainsFault"]["clear_reason"] == "snapshot"

    # An empty table clears what is left.
    shelf.set_rows([])
    deployment.wait_alarm("shelf1", "RectifierFault", "cleared")
    assert deployment.wait_listed(lambda rows: rows == [], "no active alarm") == []


def test_an_unreachable_device_keeps_its_table_alarms(deployment, agents):
    shelf = agents("shelf2", [MAINS, FUSE])
    deployment.inventory([device(shelf)])
    deployment.start()
    deployment.wait_alarm("shelf2", "MainsFault", "raised")
    deployment.wait_alarm("shelf2", "LoadFuseBlown", "raised")

    shelf.stop()
    down = deployment.wait_alarm("shelf2", UNREACHABLE, "raised")
    assert down.severity == "major" and down.cause_ref is None
    assert f"127.0.0.1:{shelf.port}" in down.message
    # Another silent poll: the table's alarms are not cleared by silence. (Only
    # one more: the poller backs off a silent device, 1 s, 2 s, 4 s... and the
    # agent's return is seen at the next poll.)
    deployment.wait_polls("shelf2", 1, unreachable=True)
    assert of(deployment.alarms.fetch(), "shelf2") == [
        ("MainsFault", "raised"), ("LoadFuseBlown", "raised"), (UNREACHABLE, "raised")]
    rows = by_name(deployment.listed("--host", "shelf2"))
    assert sorted(rows) == ["LoadFuseBlown", "MainsFault", UNREACHABLE]
    assert all(r["active"] for r in rows.values())
    assert rows[UNREACHABLE]["severity"] == "major"

    # The agent answers again with the same table: only unreachable clears.
    shelf.start()
    deployment.wait_alarm("shelf2", UNREACHABLE, "cleared")
    deployment.wait_polls("shelf2", 2, unreachable=False)
    assert of(deployment.alarms.fetch(), "shelf2") == [
        ("MainsFault", "raised"), ("LoadFuseBlown", "raised"), (UNREACHABLE, "raised"),
        (UNREACHABLE, "cleared")]
    rows = deployment.wait_listed(
        lambda rows: UNREACHABLE not in by_name(rows), "unreachable gone", "--host", "shelf2")
    assert sorted((r["name"], r["severity"], r["count"]) for r in rows) == [
        ("LoadFuseBlown", "minor", 1), ("MainsFault", "critical", 1)]


def test_an_unreachable_parent_masks_its_child(deployment, agents):
    hub = agents("hub1", [])
    shelf = agents("shelf3", [FUSE])
    deployment.inventory([device(hub), device(shelf, parent="hub1")])
    deployment.start()
    deployment.wait_alarm("shelf3", "LoadFuseBlown", "raised")
    deployment.wait_polls("hub1", 1, unreachable=False)

    # The parent goes first (the router in front of the shelf fails)...
    hub.stop()
    hub_down = deployment.wait_alarm("hub1", UNREACHABLE, "raised")
    assert hub_down.severity == "major" and hub_down.cause_ref is None
    assert hub_down.ref == alarm_ref("hub1", UNREACHABLE, UNREACHABLE)
    # ... then the child behind it stops answering: a consequence, not a cause.
    shelf.stop()
    masked = deployment.wait_alarm("shelf3", UNREACHABLE, "raised")
    assert masked.cause_ref == hub_down.ref
    assert masked.severity == "warning"
    # Only the unreachable alarm is masked ([correlator] mask_all = false).
    rows = by_name(deployment.listed("--host", "shelf3"))
    assert rows[UNREACHABLE]["cause_ref"] == hub_down.ref
    assert rows[UNREACHABLE]["severity"] == "warning"
    assert rows["LoadFuseBlown"]["cause_ref"] is None
    assert rows["LoadFuseBlown"]["severity"] == "minor"

    # The parent answers again; the child is still silent: its alarm is its own now.
    hub.start()
    deployment.wait_alarm("hub1", UNREACHABLE, "cleared")
    unmasked = deployment.wait_alarm("shelf3", UNREACHABLE, "updated")
    assert unmasked.cause_ref is None and unmasked.severity == "major"
    assert unmasked.ref == masked.ref
    rows = by_name(deployment.wait_listed(
        lambda rows: by_name(rows).get(UNREACHABLE, {}).get("cause_ref", 0) is None,
        "shelf3 unreachable unmasked", "--host", "shelf3"))
    assert rows[UNREACHABLE]["severity"] == "major" and rows[UNREACHABLE]["active"] is True

    # And when the child answers, its unreachable alarm clears; its table alarm stays.
    shelf.start()
    deployment.wait_alarm("shelf3", UNREACHABLE, "cleared")
    assert of(deployment.alarms.fetch(), "shelf3") == [
        ("LoadFuseBlown", "raised"), (UNREACHABLE, "raised"), (UNREACHABLE, "updated"),
        (UNREACHABLE, "cleared")]
    assert [r["name"] for r in deployment.wait_listed(
        lambda rows: len(rows) == 1, "only the fuse", "--host", "shelf3")] == ["LoadFuseBlown"]
