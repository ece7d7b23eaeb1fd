"""A rule's own ``emails`` (the legacy rules table's per-rule recipients), end to end.

``twistd centaure-alerter`` and ``twistd centaure-correlator`` with real
RabbitMQ, MariaDB and the test SMTP server (:mod:`tests.smtpserver`). Polls
cross two rules' thresholds, then come back under them. What an operator checks:

* ``disk-high`` (emails given as one text, as the legacy table writes them, ``"ops@...; owner@..."``)
  matches no route: both its addresses get the breach and the recovery;
* ``cpu-high`` lists ``shared@`` and ``owner@``; the route ``noc`` mails its
  alarms to ``noc@`` and ``shared@``: ``owner@`` gets them from the rule, and
  ``shared@``, on both lists, gets each alert once, not twice;
* every mail carries the transition's idempotency key (raised / cleared).
"""

from __future__ import annotations

import collections
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
    declare_consumer_queues,
    drop_prefixed_tables,
    sleep,
    until_while_alive,
)
from tests.smtpserver import SmtpServer

pytestmark = pytest.mark.integration

RULES = """\
- name: cpu-high
  severity: major
  when: {metric: cpuLoad, op: '>', value: 90}
  emails: [shared@example.com, owner@example.com]
- name: disk-high
  severity: minor
  when: {metric: diskUsed, op: '>', value: 90}
  emails: "ops@example.com; owner@example.com"
"""
ROUTES = """\
defaults: {group_wait: 200ms, group_interval: 200ms, repeat_interval: 1h}
routes:
  - name: noc
    match: {name: [cpu-high]}
    email: [noc@example.com, shared@example.com]
"""


@pytest.fixture
def tables():
    tag = uuid.uuid4().hex[:8]
    names = {"alerter": f"a{tag}_", "correlator": f"c{tag}_"}
    yield names
    drop_prefixed_tables(MARIADB_URL, tuple(names.values()))


def poll(cpu: float, disk: float) -> messages.Perf:
    return messages.Perf(source="snmp@n1", ts=time.time(), host="r1", address="10.0.0.1",
                         device_type="router",
                         metrics=[messages.Metric(name=n, value=v, kind="gauge", oid="1.3.6.1.4.1.1")
                                  for n, v in (("cpuLoad", cpu), ("diskUsed", disk))])


def publish(prefix: str, perf: messages.Perf) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(messages.exchange_name(prefix, "perf"), messages.routing_key(perf),
                         messages.encode(perf),
                         pika.BasicProperties(message_id=uuid.uuid4().hex, type="perf",
                                              delivery_mode=2))
    finally:
        conn.close()


def ready(name: str):
    return lambda status, body: status == 200 and \
        body.get("connectors", {}).get(name, {}).get("state") == "ready"


@pytest_twisted.ensureDeferred
async def test_rule_emails_get_breach_and_recovery_once(tmp_path, prefix, tables):
    smtp = SmtpServer()
    smtp.start()
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "alert-routes.yaml").write_text(ROUTES)
    a_port, c_port = free_tcp_port(), free_tcp_port()
    common = dict(database={"url": MARIADB_URL},
                  correlator={"table_prefix": tables["correlator"], "batch_interval": "20ms",
                              "tick_interval": "0.2s"},
                  alerter={"table_prefix": tables["alerter"], "rules": "rules.yaml",
                           "routes": "alert-routes.yaml", "backfill": "false",
                           "retry_initial": "0.2s", "retry_max": "1s"},
                  smtp={"port": str(smtp.port), "starttls": "never",
                        "sender": "centaure@example.com"})
    (tmp_path / "alerter.ini").write_text(settings_text(
        prefix, tmp_path, connector={"http_port": str(a_port)}, **common))
    (tmp_path / "correlator.ini").write_text(settings_text(
        prefix, tmp_path, connector={"http_port": str(c_port)}, **common))
    await threads.deferToThread(declare_consumer_queues, prefix, "alerter", "correlator")
    daemons = [TwistdDaemon("centaure-correlator", tmp_path / "correlator.ini", c_port),
               TwistdDaemon("centaure-alerter", tmp_path / "alerter.ini", a_port)]

    def received() -> collections.Counter:
        """(address, rule, raised|cleared) -> mails."""
        out: collections.Counter = collections.Counter()
        for m in smtp.inbox:
            key = m["X-Centaure-Idempotency-Key"]
            state = "cleared" if ":cleared:" in key else "raised"
            rule = "cpu-high" if "cpu-high" in m["Subject"] else "disk-high"
            out[(m["To"], rule, state)] += 1
        return out

    expected = collections.Counter({
        (to, rule, state): 1
        for rule, addresses in (("cpu-high", ("noc", "shared", "owner")),
                                ("disk-high", ("ops", "owner")))
        for to in (f"{a}@example.com" for a in addresses)
        for state in ("raised", "cleared")})

    async def until(predicate, what: str, timeout: float = 40.0) -> None:
        await until_while_alive(daemons, predicate, what, timeout, received)

    try:
        for d in daemons:
            await threads.deferToThread(d.wait_health, ready(d.plugin.split("-")[1]))
        await threads.deferToThread(publish, prefix, poll(cpu=95, disk=97))
        await until(lambda: sum(n for k, n in received().items() if k[2] == "raised") >= 5,
                    "the breach mails")
        await threads.deferToThread(publish, prefix, poll(cpu=10, disk=10))
        await until(lambda: sum(received().values()) >= 10, "the recovery mails")
        await sleep(1.5)   # a duplicate would arrive meanwhile
        assert received() == expected
        subjects = [m["Subject"] for m in smtp.inbox if m["To"] == "owner@example.com"]
        assert any("disk-high" in s for s in subjects) and any("cpu-high" in s for s in subjects)
    finally:
        for d in daemons:
            d.stop()
        await smtp.stop()
