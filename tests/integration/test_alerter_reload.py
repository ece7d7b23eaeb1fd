"""``twistd centaure-alerter`` reloading its rules and routes on SIGHUP (real RabbitMQ, MariaDB, SMTP).

What an operator checks:

* a rule added to ``rules.yaml`` and ``kill -HUP`` sent: one log line says
  what changed, and the next poll over its threshold publishes its
  ``threshold`` (breached); the rules already there go on without repeating
  their breach;
* a broken ``rules.yaml`` (an unknown operator) and ``kill -HUP``: one log
  line names the file, the rule's line and the problem; the running rules
  still apply (the next poll under the threshold publishes the recovery);
* a route added to ``alert-routes.yaml`` and ``kill -HUP``: an alarm that no
  route took before is mailed to the new route's receiver (the test SMTP
  server); a broken routes file is refused with one line and the route
  added before still delivers.
"""

from __future__ import annotations

import signal
import time
import uuid

import pika
import pytest
import pytest_twisted
from twisted.internet import threads

from connector import messages
from tests.conftest import AMQP_URL, MARIADB_URL, settings_text
from tests.integration.daemons import TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port
from tests.integration.support import (
    until_while_alive,
    collect,
    declare_check_queue, declare_consumer_queues, drop_prefixed_tables, sleep,
)
from tests.smtpserver import SmtpServer

pytestmark = pytest.mark.integration

CPU_RULE = """\
- name: cpu-high
  when: {metric: cpuLoad, op: '>', value: 90}
"""
MEM_RULE = """\
- name: mem-high
  severity: major
  when: {metric: memUsed, op: '>', value: 80}
"""
BROKEN_RULE = """\
- name: disk-high
  when: {metric: diskUsed, op: '=>', value: 80}
"""


@pytest.fixture
def tables():
    tag = uuid.uuid4().hex[:8]
    names = {"alerter": f"a{tag}_"}
    yield names
    drop_prefixed_tables(MARIADB_URL, tuple(names.values()))


def alerter_settings(tmp_path, prefix: str, tables: dict, smtp_port: int = 25) -> tuple:
    port = free_tcp_port()
    path = tmp_path / "alerter.ini"
    path.write_text(settings_text(
        prefix, tmp_path, connector={"http_port": str(port)}, database={"url": MARIADB_URL},
        alerter={"table_prefix": tables["alerter"], "rules": "rules.yaml",
                 "routes": "alert-routes.yaml", "backfill": "false",
                 "retry_initial": "0.2s", "retry_max": "1s"},
        smtp={"port": str(smtp_port), "starttls": "never", "sender": "centaure@example.com"}))
    return path, port


def ready(status: int, body: dict) -> bool:
    return status == 200 and \
        body.get("connectors", {}).get("alerter", {}).get("state") == "ready"


def publish(prefix: str, msg_type: str, items: list) -> None:
    """Confirmed, persistent, as the poller or the correlator publish them."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for m in items:
            ch.basic_publish(messages.exchange_name(prefix, msg_type), messages.routing_key(m),
                             messages.encode(m),
                             pika.BasicProperties(message_id=uuid.uuid4().hex, type=msg_type,
                                                  delivery_mode=2))
    finally:
        conn.close()


def poll(**values: float) -> messages.Perf:
    return messages.Perf(source="snmp@n1", ts=time.time(), host="r1", address="10.0.0.1",
                         device_type="router",
                         metrics=[messages.Metric(name=k, value=v, kind="gauge",
                                                  oid="1.3.6.1.4.1.1") for k, v in values.items()])


def thresholds(queue: str, want: int, timeout: float = 30, settle: float = 1.0) -> list[tuple]:
    """(rule, state) of the ``threshold`` messages: ``want`` of them, then ``settle`` s for extras."""
    return [(t.rule, t.state) for t in (messages.decode(body, expected_type="threshold")
                                        for _, body in collect(queue, want, timeout, settle))]


def log_lines(daemon: TwistdDaemon, text: str) -> list[str]:
    return [line for line in daemon.logs().splitlines() if text in line]


def hup_and_wait(daemon: TwistdDaemon, text: str, before: int) -> list[str]:
    """SIGHUP, then wait for one more log line containing ``text``; the new lines."""
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while len(log_lines(daemon, text)) <= before:
        assert daemon.alive(), daemon.logs()[-3000:]
        assert time.monotonic() < deadline, f"no {text!r}:\n{daemon.logs()[-3000:]}"
        time.sleep(0.05)
    time.sleep(0.3)  # any further line about the same reload
    return log_lines(daemon, text)[before:]


def test_sighup_reloads_rules_and_refuses_a_broken_file(tmp_path, prefix, tables):
    (tmp_path / "rules.yaml").write_text(CPU_RULE)
    ini, port = alerter_settings(tmp_path, prefix, tables)
    declare_consumer_queues(prefix, "alerter")
    queue = declare_check_queue(prefix, "threshold")
    alerter = TwistdDaemon("centaure-alerter", ini, port)
    try:
        alerter.wait_health(ready)
        publish(prefix, "perf", [poll(cpuLoad=95, memUsed=99)])
        assert thresholds(queue, 1) == [("cpu-high", "breached")]   # memUsed: no rule yet

        (tmp_path / "rules.yaml").write_text(CPU_RULE + MEM_RULE)
        (line,) = hup_and_wait(alerter, "rules reloaded", 0)
        assert "rules.yaml: 2 rules (was 1); added mem-high" in line, line
        assert alerter.wait_health(lambda s, b: b.get("connectors", {}).get(
            "alerter", {}).get("rules") == 2)
        publish(prefix, "perf", [poll(cpuLoad=96, memUsed=99)])
        # The new rule breaches; cpu-high, unchanged, is still breached: nothing again.
        assert thresholds(queue, 1) == [("mem-high", "breached")]

        # A broken file: refused in one line naming file, line and problem; old rules kept.
        (tmp_path / "rules.yaml").write_text(CPU_RULE + MEM_RULE + BROKEN_RULE)
        (line,) = hup_and_wait(alerter, "refused", 0)
        assert "rules reload refused, keeping the 2 running rules" in line, line
        assert "rules.yaml: rule 3 (line 6) (disk-high): when: op: expected one of" in line, line
        assert "'=>'" in line, line
        assert len(log_lines(alerter, "rules reloaded")) == 1   # no partial reload
        publish(prefix, "perf", [poll(cpuLoad=10, memUsed=10, diskUsed=99)])
        assert sorted(thresholds(queue, 2)) == [("cpu-high", "recovered"),
                                                ("mem-high", "recovered")]

        # A rule removed while breached: its breach is published as recovered.
        publish(prefix, "perf", [poll(cpuLoad=10, memUsed=99)])
        assert thresholds(queue, 1) == [("mem-high", "breached")]
        (tmp_path / "rules.yaml").write_text(CPU_RULE)
        (line,) = hup_and_wait(alerter, "rules reloaded", 1)
        assert "1 rules (was 2); removed mem-high; 1 breaches" in line, line
        assert thresholds(queue, 1) == [("mem-high", "recovered")]
        assert alerter.alive()
    finally:
        alerter.stop()


ROUTE_NOC = """\
defaults: {group_wait: 200ms, group_interval: 200ms, repeat_interval: 1h}
routes:
  - name: noc
    match: {name: [cpu-high]}
    email: [noc@example.com]
"""
ROUTE_STORAGE = """\
  - name: storage
    match: {name: ["disk*"]}
    email: [storage@example.com]
"""


def alarm(ref: int, name: str, host: str) -> messages.Alarm:
    now = time.time()
    return messages.Alarm(source="correlator@testnode", host=host, ref=ref, name=name,
                          severity="major", state="raised", message=f"{name} on {host}",
                          first_seen=now, last_seen=now, count=1, origin="trap")


@pytest_twisted.ensureDeferred
async def test_sighup_reloads_routes_and_refuses_a_broken_file(tmp_path, prefix, tables):
    smtp = SmtpServer()
    smtp.start()
    (tmp_path / "rules.yaml").write_text("[]\n")
    (tmp_path / "alert-routes.yaml").write_text(ROUTE_NOC)
    ini, port = alerter_settings(tmp_path, prefix, tables, smtp.port)
    await threads.deferToThread(declare_consumer_queues, prefix, "alerter")
    alerter = TwistdDaemon("centaure-alerter", ini, port)

    def to(address: str) -> list[str]:
        return [m["Subject"] for m in smtp.inbox if m["To"] == address]

    async def until(predicate, what: str, timeout: float = 30.0) -> None:
        await until_while_alive([alerter], predicate, what, timeout,
                                lambda: [(m["To"], m["Subject"]) for m in smtp.inbox])

    try:
        await threads.deferToThread(alerter.wait_health, ready)
        # No route takes disk alarms yet; cpu-high goes to the NOC (proves delivery works).
        await threads.deferToThread(publish, prefix, "alarm",
                                    [alarm(1, "diskFull", "fs1"), alarm(2, "cpu-high", "r1")])
        await until(lambda: to("noc@example.com"), "the NOC's mail")
        await sleep(1.0)
        assert to("storage@example.com") == []

        (tmp_path / "alert-routes.yaml").write_text(ROUTE_NOC + ROUTE_STORAGE)
        (line,) = await threads.deferToThread(hup_and_wait, alerter, "routes reloaded", 0)
        assert "alert-routes.yaml: 2 routes (was 1); added storage" in line, line
        await threads.deferToThread(publish, prefix, "alarm", [alarm(3, "diskFull", "fs2")])
        await until(lambda: to("storage@example.com"), "the storage team's mail")
        assert any("fs2" in s for s in to("storage@example.com")), to("storage@example.com")

        # Broken: an unknown key. Refused in one line naming the file, route and key.
        (tmp_path / "alert-routes.yaml").write_text(
            ROUTE_NOC + ROUTE_STORAGE + "    emial: [typo@example.com]\n")
        (line,) = await threads.deferToThread(hup_and_wait, alerter, "refused", 0)
        assert "routes reload refused, keeping the running routes" in line, line
        assert "alert-routes.yaml: route 'storage': unknown key 'emial'" in line, line
        await threads.deferToThread(publish, prefix, "alarm", [alarm(4, "diskFull", "fs3")])
        await until(lambda: len(to("storage@example.com")) >= 2, "the second storage mail")
        assert any("fs3" in s for s in to("storage@example.com")), to("storage@example.com")
        assert alerter.alive()
    finally:
        alerter.kill()
        await smtp.stop()
