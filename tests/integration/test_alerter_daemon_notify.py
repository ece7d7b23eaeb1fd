"""``twistd centaure-alerter`` notifying by mail across a kill -9, with real RabbitMQ and MariaDB.

What an operator checks: twenty alarms are raised (``alarm`` messages, one
host each, so one group and one mail per transition: ``group_by: [host]``);
the ten from thresholds go to a route with ``group_wait`` 200 ms, the ten
from traps to one with ``group_wait`` 1 s. As soon as the first mails arrive
in the test SMTP server (:mod:`tests.smtpserver`, in this process) the
alerter is killed with -9: in the middle of the threshold alarms' deliveries
(rows in the outbox, some accepted by the server and not yet marked sent),
while the trap alarms' groups still wait (saved group state, nothing in the
outbox yet). All twenty alarms clear while it is down (their ``cleared``
messages wait in its queue ``<prefix>.alerter``), and it stays down longer
than the trap route's ``group_wait``, so that every raise was due while it
was active (a raise cleared *within* ``group_wait`` is dropped by design);
restarted, it tells what was left to tell.

What the product guarantees (:mod:`connector_alerter.outbox`): a message is
written to the outbox, with the group state that produced it, before the
input is acked, and marked sent only *after* the SMTP server accepted it. So

* nothing is lost: every raise and every recovery is mailed, including the
  recoveries that happened while the alerter was down;
* a transition is never told under two idempotency keys (a restart does not
  make a new message for what was already queued);
* the one window where a mail can be received twice is a kill -9 between the
  server's acceptance and the outbox's "sent" mark: it is sent again at
  start-up *with the same idempotency key* (headers ``Idempotency-Key`` and
  ``X-Centaure-Idempotency-Key``, and the ``Message-ID`` derived from it),
  so a receiver can deduplicate. Only raises can be in that window here (the
  recoveries are all delivered after the one restart), and at most once
  more; recoveries arrive exactly once.

The daemon is alive and ``/health`` 200 at the end.

Also: an alarm masked by the correlator (its severity lowered below what the
route that mailed it matches) and then cleared is resolved on that route, and
no reminder follows.
"""

from __future__ import annotations

import collections
import time

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import threads

from connector import messages
from tests.conftest import MARIADB_URL, settings_text
from tests.integration.daemons import TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port
from tests.integration.support import (
    declare_consumer_queues,
    publish_confirmed,
    sleep,
    sql_tables,
    until_while_alive,
)
from tests.smtpserver import SmtpServer

pytestmark = pytest.mark.integration

N = 20
RECEIVER = "noc@example.com"
ROUTES = f"""\
routes:
  - name: noc
    match: {{origin: [threshold]}}
    group_by: [host]
    group_wait: 200ms
    group_interval: 200ms
    repeat_interval: 1h
    send_resolved: true
    email: [{RECEIVER}]
  - name: noc-traps
    match: {{origin: [trap]}}
    group_by: [host]
    group_wait: 1s
    group_interval: 200ms
    repeat_interval: 1h
    send_resolved: true
    email: [{RECEIVER}]
"""
KEY_HEADERS = ("Idempotency-Key", "X-Centaure-Idempotency-Key")
T0 = round(time.time() - 120, 3)


def host(i: int) -> str:
    return f"sw{i:02d}.example.net"


def alarm(i: int, cleared: bool) -> messages.Alarm:
    first = T0 + i + 0.25
    end = T0 + 60 + i + 0.5
    return messages.Alarm(
        source="correlator@testnode", host=host(i), ref=7000 + i, name=f"link-down-{i}",
        severity="major", state="cleared" if cleared else "raised",
        message=f"link down on port {i}", first_seen=first,
        last_seen=end if cleared else first, cleared_at=end if cleared else None, count=1,
        origin="trap" if i % 2 else "threshold")


def key_of(a: messages.Alarm) -> str:
    """The transition's idempotency key (connector_alerter.grouping.transition_key)."""
    if a.state == "cleared":
        return f"{a.ref}:cleared:{float(a.cleared_at)!r}"
    return f"{a.ref}:raised:{float(a.first_seen)!r}"


def ready(status: int, body: dict) -> bool:
    return status == 200 and \
        body.get("connectors", {}).get("alerter", {}).get("state") == "ready"


def keys(smtp: SmtpServer) -> list[str]:
    """The idempotency key of every mail received (both headers and Message-ID agree)."""
    out = []
    for m in smtp.inbox:
        values = {m[h] for h in KEY_HEADERS}
        assert len(values) == 1 and None not in values, dict(m.items())
        out.append(values.pop())
    return out


@pytest_twisted.ensureDeferred
async def test_kill_9_mid_delivery_every_transition_mailed_once_per_key(tmp_path, prefix,
                                                                        sql_tables):
    tables = sql_tables
    smtp = SmtpServer()
    smtp.start()
    (tmp_path / "alert-routes.yaml").write_text(ROUTES)
    (tmp_path / "rules.yaml").write_text("[]\n")
    port = free_tcp_port()
    (tmp_path / "alerter.ini").write_text(settings_text(
        prefix, tmp_path, connector={"http_port": str(port)},
        database={"url": MARIADB_URL},
        alerter={"table_prefix": tables["alerter"], "rules": "rules.yaml",
                 "routes": "alert-routes.yaml", "backfill": "false",
                 "retry_initial": "0.2s", "retry_max": "1s"},
        smtp={"port": str(smtp.port), "starttls": "never",
              "sender": "centaure@example.com"}))
    await threads.deferToThread(declare_consumer_queues, prefix, "alerter")
    raised = [alarm(i, False) for i in range(N)]
    cleared = [alarm(i, True) for i in range(N)]
    want = {key_of(a): a for a in raised + cleared}
    alerter = TwistdDaemon("centaure-alerter", tmp_path / "alerter.ini", port)

    async def until(predicate, what: str, timeout: float = 20.0) -> None:
        await until_while_alive([alerter], predicate, what, timeout,
                                lambda: f"got {sorted(set(keys(smtp)))}")

    try:
        await threads.deferToThread(alerter.wait_health, ready)
        await threads.deferToThread(publish_confirmed, prefix, raised)
        published = time.monotonic()

        # The first mails are in: kill -9 in the middle of the deliveries.
        await until(lambda: len(smtp.inbox) >= 3, "the first raise mails")
        alerter.kill()
        # Sessions the alerter wrote before dying are read by the server still.
        await sleep(0.5)
        before = len(smtp.inbox)

        # Down: every alarm clears; the messages wait in the alerter's queue.
        await threads.deferToThread(publish_confirmed, prefix, cleared)
        await sleep(0.3)
        assert len(smtp.inbox) == before   # nobody sends anything meanwhile

        # Down longer than the slow route's group_wait (the raises were due).
        await sleep(max(0.0, published + 1.5 - time.monotonic()))
        alerter.start()
        await threads.deferToThread(alerter.wait_health, ready)
        await until(lambda: set(keys(smtp)) >= set(want), "every raise and recovery", 25)
        # A raise the server took before the kill is sent again at start-up and
        # marked sent only then: possibly after every key above was seen once.
        deadline = time.monotonic() + 25
        while await threads.deferToThread(outbox_pending, tables["alerter"]):
            assert alerter.alive(), alerter.logs()[-3000:]
            assert time.monotonic() < deadline, \
                f"outbox rows still pending\n{alerter.logs()[-3000:]}"
            await sleep(0.1)
        await sleep(1.5)   # a late repeat would show up here

        got = keys(smtp)
        counts = collections.Counter(got)
        # No loss, and nothing else than the forty transitions (one key each).
        assert set(counts) == set(want), sorted(set(counts) ^ set(want))
        # Recoveries exactly once; a raise at most twice (the accepted-but-not-
        # yet-marked window of the kill), then under its one key.
        twice = {k: n for k, n in counts.items() if n > 1}
        assert all(want[k].state == "raised" and n == 2 for k, n in twice.items()), twice
        assert len(got) - len(counts) <= before, (before, twice)
        # Each mail says what its key says, to the route's receiver.
        for m, k in zip(smtp.inbox, got):
            a = want[k]
            assert m["To"] == RECEIVER
            assert a.host in m["Subject"], (k, m["Subject"])
            word = "1 resolved" if a.state == "cleared" else "1 active"
            assert word in m["Subject"], (k, m["Subject"])
            assert k in m.get_body(("plain",)).get_content()
        # Alive, healthy, and the outbox has nothing left to send.
        status, body = await threads.deferToThread(alerter.health)
        assert status == 200 and alerter.alive(), body
        pending = await threads.deferToThread(outbox_pending, tables["alerter"])
        assert pending == 0
    finally:
        alerter.stop()
        await smtp.stop()


def outbox_pending(table_prefix: str) -> int:
    """Outbox rows not yet sent (or failed for good)."""
    engine = sa.create_engine(MARIADB_URL)
    try:
        with engine.connect() as c:
            return c.scalar(sa.text(
                f"SELECT COUNT(*) FROM {table_prefix}outbox WHERE state = 'pending'"))
    finally:
        engine.dispose()


MASK_ROUTES = """\
routes:
  - name: oncall
    match: {severity: ">=major"}
    group_by: [host]
    group_wait: 200ms
    group_interval: 200ms
    repeat_interval: 4s
    send_resolved: true
    email: [oncall@example.com]
  - name: team
    match: {severity: minor}
    group_by: [host]
    group_wait: 200ms
    group_interval: 200ms
    repeat_interval: 1h
    send_resolved: true
    email: [team@example.com]
"""


@pytest_twisted.ensureDeferred
async def test_a_masked_alarm_is_resolved_on_the_route_that_told_its_raise(tmp_path, prefix,
                                                                          sql_tables):
    """The on-call route (``>=major``) mails a major alarm; the correlator then masks it
    under a root cause (severity minor, which only the team route matches: the team is
    told it) and clears it: on-call gets the recovery and no reminder after it."""
    smtp = SmtpServer()
    smtp.start()
    (tmp_path / "alert-routes.yaml").write_text(MASK_ROUTES)
    (tmp_path / "rules.yaml").write_text("[]\n")
    port = free_tcp_port()
    (tmp_path / "alerter.ini").write_text(settings_text(
        prefix, tmp_path, connector={"http_port": str(port)},
        database={"url": MARIADB_URL},
        alerter={"table_prefix": sql_tables["alerter"], "rules": "rules.yaml",
                 "routes": "alert-routes.yaml", "backfill": "false"},
        smtp={"port": str(smtp.port), "starttls": "never",
              "sender": "centaure@example.com"}))
    await threads.deferToThread(declare_consumer_queues, prefix, "alerter")
    raised = alarm(0, False)
    masked = messages.Alarm(**dict(
        {f: getattr(raised, f) for f in raised.__struct_fields__},
        state="updated", severity="minor", cause_ref=6999, last_seen=raised.first_seen + 5))
    cleared = messages.Alarm(**dict(
        {f: getattr(masked, f) for f in masked.__struct_fields__},
        state="cleared", last_seen=raised.first_seen + 10, cleared_at=raised.first_seen + 10))
    alerter = TwistdDaemon("centaure-alerter", tmp_path / "alerter.ini", port)

    def mails() -> list[tuple[str, str]]:
        return [(m["To"], k) for m, k in zip(smtp.inbox, keys(smtp))]

    async def until(predicate, what: str, timeout: float = 20.0) -> None:
        await until_while_alive([alerter], predicate, what, timeout, lambda: f"got {mails()}")

    try:
        await threads.deferToThread(alerter.wait_health, ready)
        await threads.deferToThread(publish_confirmed, prefix, [raised])
        await until(lambda: len(smtp.inbox) >= 1, "the raise mailed to on-call")
        await threads.deferToThread(publish_confirmed, prefix, [masked])
        await until(lambda: ("team@example.com", key_of(raised)) in mails(),
                    "the masked alarm mailed to the team")
        await threads.deferToThread(publish_confirmed, prefix, [cleared])
        await until(lambda: {("oncall@example.com", key_of(cleared)),
                             ("team@example.com", key_of(cleared))} <= set(mails()),
                    "the recovery mails")
        await sleep(4.5)   # on-call's repeat_interval: a reminder would show up here
        assert sorted(mails()) == sorted([
            ("oncall@example.com", key_of(raised)), ("team@example.com", key_of(raised)),
            ("oncall@example.com", key_of(cleared)), ("team@example.com", key_of(cleared))]), \
            mails()
        assert "1 resolved" in [m for m in smtp.inbox if m["To"] == "oncall@example.com"][-1][
            "Subject"]
        assert alerter.alive()
    finally:
        alerter.stop()
        await smtp.stop()
