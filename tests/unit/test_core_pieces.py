"""Topology routing, the embedded bus, metrics rendering and the status table."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from connector import messages
from connector.consumer import REASON_HEADER
from connector.embedded import EmbeddedBus
from connector.metrics import Counters, render_prometheus
from connector.status import latest_by_connector, status_table
from connector.topology import (
    DELIVERY_LIMIT, STATUS_MAX_LENGTH, STATUS_TTL_MS, all_queues, connector_queue, dead_letter_queue,
    published_exchanges, status_queue, topic_matches)


@pytest.mark.parametrize("pattern,key,expected", [
    ("#", "perf.a.b", True),
    ("perf.#", "perf", True),
    ("perf.#", "perf.sw1.example.net", True),
    ("perf.*", "perf.sw1", True),
    ("perf.*", "perf.sw1.example.net", False),
    ("*.sw1", "perf.sw1", True),
    ("perf.#.net", "perf.net", True),
    ("perf.#.net", "perf.a.b.net", True),
    ("perf.#.net", "perf.a.b.org", False),
    ("alarm.#", "perf.x", False),
    ("perf.sw1", "perf.sw1", True),
    ("perf.sw1", "perf.sw10", False),
])
def test_topic_matching(pattern, key, expected):
    assert topic_matches(pattern, key) is expected


def test_queues_follow_the_design():
    q = connector_queue("centaure", "correlator", "quorum")
    assert q.name == "centaure.correlator"
    assert q.message_types == ("event", "alarm_snapshot", "threshold", "alarm_command")
    assert q.arguments == {
        "x-dead-letter-exchange": "centaure.dead", "x-queue-type": "quorum",
        "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish",
        "x-delivery-limit": DELIVERY_LIMIT, "x-queue-leader-locator": "balanced"}
    # Classic queues keep the arguments existing brokers already hold.
    assert connector_queue("centaure", "db").arguments == {"x-dead-letter-exchange": "centaure.dead"}
    assert status_queue("centaure").arguments == {"x-message-ttl": STATUS_TTL_MS,
                                                  "x-max-length": STATUS_MAX_LENGTH}
    assert dead_letter_queue("centaure").arguments == {}
    assert {q.arguments.get("x-queue-type") for q in all_queues("centaure", "quorum")} == {"quorum"}
    assert {x.name for x in all_queues("centaure")} == {
        "centaure.db", "centaure.correlator", "centaure.alerter", "centaure.console",
        "centaure.dead", "centaure.status"}
    with pytest.raises(KeyError, match="consumes nothing"):
        connector_queue("centaure", "snmp")


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.seen = []
        self.fail = fail

    def handle(self, message, delivery):
        if self.fail:
            raise ValueError("boom")
        self.seen.append((message.msg_type, delivery.routing_key))


def perf(host="sw1"):
    return messages.Perf(source="snmp@n", host=host, address="a", device_type="t",
                         metrics=[messages.Metric(name="m", value=1, kind="gauge", oid="1.3")])


async def _turns(n=5):
    for _ in range(n):
        await task.deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.ensureDeferred
async def test_embedded_bus_routes_by_type_to_each_consumer():
    bus = EmbeddedBus(reactor)
    db, alerter = Recorder(), Recorder()
    bus.subscriber("db").subscribe(connector_queue("centaure", "db"), db)
    bus.subscriber("alerter").subscribe(connector_queue("centaure", "alerter"), alerter)
    pub = bus.publisher("snmp")
    await pub.publish(perf("sw1"))
    await pub.publish(messages.AlarmSnapshot(source="snmp@n", host="sw1", alarms=[]))
    await _turns()
    assert db.seen == [("perf", "perf.sw1")]  # the writer does not read snapshots
    assert alerter.seen == [("perf", "perf.sw1")]


@pytest_twisted.ensureDeferred
async def test_embedded_bus_dead_letters_bad_and_failing_messages():
    bus = EmbeddedBus(reactor, retry_limit=1, retry_delay=0.01)
    bad = Recorder(fail=True)
    bus.subscriber("alerter").subscribe(connector_queue("centaure", "alerter"), bad)
    pub = bus.publisher("snmp")
    await pub.publish_raw("centaure.perf", "perf.x", b"not json", {})
    await pub.publish(perf())
    await _turns(20)
    dead = bus.queues["centaure.dead"].ready
    reasons = [d.headers[REASON_HEADER] for d in dead]
    assert reasons[0].startswith("invalid message: invalid JSON")
    assert reasons[1] == "handler failed 2 times: boom"
    assert bus.counters_for("alerter").get("dead_lettered") == 2


def test_prometheus_rendering():
    c = Counters("snmp")
    c.inc("polls", 3)
    c.set("buffered", 2)
    h = c.histogram("poll_seconds", buckets=(0.1, 1.0))
    h.observe(0.05)
    h.observe(0.5)
    text = render_prometheus([c])
    assert '# TYPE centaure_polls_total counter\ncentaure_polls_total{connector="snmp"} 3' in text
    assert 'centaure_buffered{connector="snmp"} 2' in text
    assert 'centaure_poll_seconds_bucket{connector="snmp",le="0.1"} 1' in text
    assert 'centaure_poll_seconds_bucket{connector="snmp",le="+Inf"} 2' in text
    assert 'centaure_poll_seconds_count{connector="snmp"} 2' in text


def test_status_table_marks_lost_and_stopped():
    def status(connector, node, ts, state="ok"):
        return messages.Status(source=f"{connector}@{node}", ts=ts, connector=connector,
                               node=node, pid=1, version="0.1", state=state, uptime=5,
                               counters={"published": 10})
    seen = latest_by_connector([
        status("snmp", "n1", 100), status("snmp", "n1", 195),  # newest wins
        status("db", "n1", 150),                                 # 50 s silent: lost
        status("traps", "n2", 190, state="stopping"),
    ])
    table = status_table(seen, now=200, interval=10, lost_after=3)
    lines = {l.split()[1]: l.split() for l in table.splitlines()[1:]}
    assert lines["snmp"][2] == "ok" and lines["snmp"][3] == "5s"
    assert lines["db"][2] == "lost"
    assert lines["traps"][2] == "stopped"
    assert status_table([], 0, 10, 3) == "no connector heartbeat seen on the bus"


def test_log_level_filters_below_the_setting():
    from twisted.logger import LogPublisher, Logger

    from connector.logs import configure_logging

    seen = []
    pub = LogPublisher(seen.append)
    configure_logging("warning", "text", publisher=pub)
    log = Logger(observer=pub)
    log.info("hidden")
    log.warn("shown")
    assert [e["log_format"] for e in seen] == ["shown"]


def test_a_connector_process_declares_only_the_exchanges_it_publishes_to():
    assert published_exchanges("p", "snmp") == ("p.perf", "p.alarm_snapshot", "p.status", "p.dead")
    assert published_exchanges("p", "db") == ("p.status", "p.dead")
    # centaure-all and tools declare every exchange.
    assert len(published_exchanges("p", "all")) == 9


def test_quorum_queues_need_a_retry_limit_below_the_delivery_limit():
    from connector.settings import SettingsError, settings_from_string

    with pytest.raises(SettingsError, match=r"retry_limit = '60': expected at most 50 with "
                                            r"queue_type = quorum"):
        settings_from_string("[bus]\nqueue_type = quorum\nretry_limit = 60\n")
    assert settings_from_string("[bus]\nretry_limit = 60\n").bus.retry_limit == 60


def test_status_shows_the_broker_node_and_old_heartbeats_still_decode():
    old = (b'{"type":"status","v":1,"ts":190,"source":"db@n1","connector":"db","node":"n1",'
           b'"pid":7,"version":"0.1","state":"ok","uptime":3,"counters":{}}')
    decoded = messages.decode(old, expected_type="status")
    assert decoded.broker is None and decoded.broker_cluster is None
    new = messages.Status(source="snmp@n1", ts=195, connector="snmp", node="n1", pid=1,
                          version="0.1", state="ok", uptime=5, counters={},
                          broker="10.0.0.2:5672", broker_cluster="rabbit@mq2")
    assert messages.decode(messages.encode(new)) == new
    table = status_table(latest_by_connector([decoded, new]), now=200, interval=10, lost_after=3)
    header, *rows = table.splitlines()
    assert header.split()[7] == "BROKER"  # after NODE CONNECTOR STATE LAST SEEN UPTIME PID
    by_connector = {r.split()[1]: r for r in rows}
    assert "  10.0.0.2:5672 (rabbit@mq2)  " in by_connector["snmp"]
    assert by_connector["db"].split()[7] == "-"


def test_heartbeat_and_health_name_the_broker_node():
    from twisted.internet import task

    from connector.metrics import Counters
    from connector.status import StatusService

    health = {"connected": True, "degraded": False, "broker": "amqp://u@mq1:5672/%2F",
              "broker_address": "mq1:5672", "broker_cluster": "rabbit@mq1"}
    service = StatusService(None, "snmp", "n1", Counters("snmp"), 10, lambda: health, task.Clock())
    beat = service.message()
    assert (beat.state, beat.broker, beat.broker_cluster) == ("ok", "mq1:5672", "rabbit@mq1")
    assert service.message("stopping").broker == "mq1:5672"
