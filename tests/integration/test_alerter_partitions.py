"""Two ``twistd centaure-alerter`` nodes with ``[bus] partitions = 8`` (real RabbitMQ, MariaDB, SMTP).

* Evaluation follows the ``alerter`` tokens: ~30 hosts' polls cross a
  threshold rule; each host's breach is published once, by the node owning
  its partition, and both nodes evaluate some. One node is killed with -9:
  the survivor takes its partitions, loads their hosts' saved state from
  SQL, and a recovery poll of every host gives exactly one ``recovered``
  each (which needs the saved breach status).
* The notifier runs on the holder of the one ``notifier`` token. Alarms of
  N hosts (one group and one mail each) are being mailed, slowly, when that
  node is killed with -9: the other node takes over (its /health says so
  within a bounded time) and finishes. What the design guarantees, and what
  is asserted: every transition is mailed (none lost), under its one
  idempotency key; a key mailed twice was first mailed by the killed node
  (accepted by the server before the kill, not yet marked sent: the outbox's
  one at-least-once window) and at most twice; the outbox ends with nothing
  pending.
"""

from __future__ import annotations

import collections
import json
import time
import uuid

import pika
import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor, threads
from twisted.mail import smtp

from connector import messages
from connector.partitions import partition_of
from connector.topology import partition_queue
from connector_alerter.service import notifier_queue
from tests.conftest import AMQP_URL, MARIADB_URL, settings_text
from tests.integration.daemons import TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port
from tests.integration.support import collect, declare_check_queue, drop_prefixed_tables, sleep
from tests.smtpserver import MailDelivery, MailMessage, SmtpServer

pytestmark = pytest.mark.integration

P = 8
HOSTS = [f"sw{i:02d}.example.net" for i in range(30)]
RULES = """\
- name: cpu-high
  when: {metric: cpuLoad, op: '>', value: 90}
"""
RECEIVER = "noc@example.com"
ROUTES = f"""\
routes:
  - name: noc
    group_by: [host]
    group_wait: 200ms
    group_interval: 200ms
    repeat_interval: 1h
    send_resolved: true
    email: [{RECEIVER}]
"""
KEY_HEADER = "X-Centaure-Idempotency-Key"


@pytest.fixture
def tables():
    tag = uuid.uuid4().hex[:8]
    names = {"alerter": f"a{tag}_"}
    yield names
    drop_prefixed_tables(MARIADB_URL, tuple(names.values()))


def declare(prefix: str) -> None:
    """The partition queues and the notifier's queue, as ``bus-config`` would."""
    from tests.integration.support import declare_specs

    declare_specs([partition_queue(prefix, "alerter", p) for p in range(P)]
                  + [notifier_queue(prefix)])


def publish(prefix: str, msgs: list) -> None:
    """With partitioned routing keys (``<type>.<p>.<host>``), confirmed."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.confirm_delivery()
    for m in msgs:
        ch.basic_publish(messages.exchange_name(prefix, m.msg_type), messages.routing_key(m, P),
                         messages.encode(m),
                         pika.BasicProperties(message_id=uuid.uuid4().hex, type=m.msg_type,
                                              delivery_mode=2))
    conn.close()


def node_settings(tmp_path, prefix: str, tables: dict, node: str, port: int, **extra) -> str:
    alerter = {"table_prefix": tables["alerter"], "rules": "rules.yaml",
               "routes": "alert-routes.yaml", "backfill": "false",
               "retry_initial": "0.2s", "retry_max": "1s"}
    alerter.update(extra.pop("alerter", {}))
    path = tmp_path / f"{node}.ini"
    path.write_text(settings_text(
        prefix, tmp_path, bus={"partitions": str(P), "balance_interval": "1s"},
        connector={"http_port": str(port), "node": node},
        buffer={"path": str(tmp_path / f"buffer-{node}-{{connector}}.sqlite3")},
        database={"url": MARIADB_URL}, alerter=alerter, **extra))
    return path


def start(tmp_path, prefix, tables, node: str, **extra) -> TwistdDaemon:
    port = free_tcp_port()
    path = node_settings(tmp_path, prefix, tables, node, port, **extra)
    return TwistdDaemon("centaure-alerter", path, port, log_name=f"{node}.log")


def alerter_health(d: TwistdDaemon) -> dict:
    return d.health()[1].get("connectors", {}).get("alerter", {})


def ready(status: int, body: dict) -> bool:
    return body.get("connectors", {}).get("alerter", {}).get("state") == "ready"


def wait(predicate, what: str, daemons, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for d in daemons:
            assert d.alive(), d.logs()[-3000:]
        assert time.monotonic() < deadline, f"timed out waiting for {what}: " + " | ".join(
            d.logs()[-2000:] for d in daemons)
        time.sleep(0.1)


def owned(d: TwistdDaemon) -> frozenset[int]:
    return frozenset(alerter_health(d).get("partitions", []))


def balanced(one: TwistdDaemon, two: TwistdDaemon) -> tuple | None:
    """The two nodes' partitions when split 4/4 and unchanged over two balance rounds."""
    first = (owned(one), owned(two))
    if len(first[0]) != P // 2 or len(first[1]) != P // 2 or first[0] & first[1]:
        return None
    time.sleep(2.0)
    return first if (owned(one), owned(two)) == first else None


def saved_breached(tables: dict) -> set[str]:
    engine = sa.create_engine(MARIADB_URL)
    try:
        with engine.connect() as c:
            rows = c.execute(sa.text(f"SELECT host, state FROM {tables['alerter']}eval_state"))
            return {h for h, s in rows if json.loads(s)["breached"]}
    except sa.exc.ProgrammingError:
        return set()
    finally:
        engine.dispose()


def poll(host: str, ts: float, cpu: float) -> messages.Perf:
    return messages.Perf(ts=ts, source="snmp@n1", host=host, address="10.0.0.1",
                         device_type="router",
                         metrics=[messages.Metric(name="cpuLoad", value=cpu, kind="gauge",
                                                  oid="1.3.6.1.4.1.1")])


def test_two_alerters_share_hosts_and_the_survivor_recovers_from_sql(tmp_path, prefix, tables):
    (tmp_path / "rules.yaml").write_text(RULES)
    declare(prefix)
    check = declare_check_queue(prefix, "threshold")
    one = start(tmp_path, prefix, tables, "n1")
    two = start(tmp_path, prefix, tables, "n2")
    try:
        one.wait_health(ready)
        two.wait_health(ready)
        split: list = []
        wait(lambda: split.append(balanced(one, two)) or split[-1] is not None,
             "the partitions to be shared 4/4", [one, two], timeout=25)
        mine = {"alerter@n1": split[-1][0], "alerter@n2": split[-1][1]}
        t0 = time.time()
        publish(prefix, [poll(h, t0, 95.0) for h in HOSTS])
        got = [messages.decode(body, expected_type="threshold")
               for _, body in collect(check, len(HOSTS), 20, settle=1.5)]
        assert sorted((t.host, t.state) for t in got) == [(h, "breached") for h in HOSTS]
        by_node = collections.Counter(t.source for t in got)
        assert set(by_node) == {"alerter@n1", "alerter@n2"}, by_node
        # Each node evaluated the hosts of its partitions only.
        assert (owned(one), owned(two)) == split[-1]
        for t in got:
            assert partition_of(t.host, P) in mine[t.source], t
        # The breaches are saved (within about a second) before the kill.
        wait(lambda: saved_breached(tables) == set(HOSTS), "the saved breaches", [one, two])

        one.kill()
        wait(lambda: set(alerter_health(two).get("partitions", [])) == set(range(P)),
             "the survivor to own every partition", [two])
        publish(prefix, [poll(h, t0 + 10, 10.0) for h in HOSTS])
        got = [messages.decode(body, expected_type="threshold")
               for _, body in collect(check, len(HOSTS), 20, settle=1.5)]
        assert sorted((t.host, t.state) for t in got) == [(h, "recovered") for h in HOSTS]
        assert {t.source for t in got} == {"alerter@n2"}
        assert two.alive() and two.health()[0] == 200
        assert "state of" in two.logs() and "hosts loaded" in two.logs()
    finally:
        one.kill()
        two.stop()


# --- the notifier -----------------------------------------------------------------

N = 24
#: Seconds the test SMTP server takes to accept each mail (one session at a time).
SMTP_DELAY = 0.12


class SlowMessage(MailMessage):
    def eomReceived(self):
        d = defer.Deferred()

        def accept():
            MailMessage.eomReceived(self)
            d.callback(None)
        reactor.callLater(SMTP_DELAY, accept)
        return d


class SlowDelivery(MailDelivery):
    def validateTo(self, user):
        return lambda: SlowMessage(self.box)


class SlowSmtpServer(SmtpServer):
    """The test SMTP server, accepting a mail every ``SMTP_DELAY`` seconds per session."""

    def _factory(self):
        f = smtp.SMTPFactory()
        f.protocol = smtp.ESMTP
        delivery = SlowDelivery(self.inbox)
        build = f.buildProtocol

        def buildProtocol(addr):
            self.connections += 1
            p = build(addr)
            p.delivery = delivery
            return p
        f.buildProtocol = buildProtocol
        return f


def alarm(i: int, t0: float) -> messages.Alarm:
    return messages.Alarm(
        source="correlator@testnode", host=HOSTS[i], ref=9000 + i, name=f"link-down-{i}",
        severity="major", state="raised", message=f"link down on port {i}",
        first_seen=t0 + i, last_seen=t0 + i, count=1, origin="trap")


def key_of(a: messages.Alarm) -> str:
    return f"{a.ref}:raised:{float(a.first_seen)!r}"


def outbox_pending(table_prefix: str) -> int:
    engine = sa.create_engine(MARIADB_URL)
    try:
        with engine.connect() as c:
            return c.scalar(sa.text(
                f"SELECT COUNT(*) FROM {table_prefix}outbox WHERE state = 'pending'"))
    finally:
        engine.dispose()


def notifier_active(d: TwistdDaemon) -> bool:
    return d.alive() and bool(alerter_health(d).get("notifier_active"))


@pytest_twisted.ensureDeferred
async def test_notifier_token_holder_killed_mid_sending_the_other_takes_over(tmp_path, prefix,
                                                                           tables):
    smtp_server = SlowSmtpServer()
    smtp_server.start()
    (tmp_path / "rules.yaml").write_text("[]\n")
    (tmp_path / "alert-routes.yaml").write_text(ROUTES)
    mail = {"smtp": {"port": str(smtp_server.port), "starttls": "never",
                     "sender": "centaure@example.com", "connections": "1"}}
    await threads.deferToThread(declare, prefix)
    nodes = [start(tmp_path, prefix, tables, n, **mail) for n in ("n1", "n2")]

    async def until(predicate, what: str, timeout: float, alive=()) -> None:
        deadline = time.monotonic() + timeout
        while not await threads.deferToThread(predicate):
            for d in alive:
                assert d.alive(), d.logs()[-3000:]
            assert time.monotonic() < deadline, f"timed out waiting for {what}: " + \
                " | ".join(d.logs()[-2000:] for d in nodes)
            await sleep(0.05)

    try:
        for d in nodes:
            await threads.deferToThread(d.wait_health, ready)
        await until(lambda: sum(map(notifier_active, nodes)) == 1, "one active notifier", 15,
                    nodes)
        active = next(d for d in nodes if notifier_active(d))
        standby = next(d for d in nodes if d is not active)
        t0 = round(time.time() - 60, 3)
        alarms = [alarm(i, t0) for i in range(N)]
        want = {key_of(a) for a in alarms}
        await threads.deferToThread(publish, prefix, alarms)

        # In the middle of the sends: a quarter in, kill -9 the token's holder.
        await until(lambda: len(smtp_server.inbox) >= N // 4, "the first mails", 15, nodes)
        active.kill()
        killed = time.monotonic()
        await until(lambda: notifier_active(standby), "the standby to take over", 15, [standby])
        takeover = time.monotonic() - killed
        # What the killed node's session had written is read by now.
        before = len(smtp_server.inbox)
        assert before < N, "every mail was sent before the kill: nothing taken over"

        def keys() -> list[str]:
            return [m[KEY_HEADER] for m in smtp_server.inbox]

        await until(lambda: set(keys()) >= want, "every mail", 20, [standby])
        await until(lambda: outbox_pending(tables["alerter"]) == 0, "an empty outbox", 10,
                    [standby])
        await sleep(1.0)   # a late repeat would show up here
        got = keys()
        counts = collections.Counter(got)
        assert set(counts) == want, sorted(set(counts) ^ want)
        twice = {k for k, n in counts.items() if n > 1}
        assert all(counts[k] == 2 for k in twice), counts
        # A repeat only of what the killed node had delivered before dying.
        assert all(got.index(k) < before for k in twice), (twice, before)
        print(f"\nnotifier takeover: standby active {takeover:.2f}s after the kill -9; "
              f"{before} mails before, {len(twice)} sent twice")
        assert takeover < 10, takeover
        assert standby.alive() and standby.health()[0] == 200
    finally:
        for d in nodes:
            d.stop()
        await smtp_server.stop()


@pytest_twisted.ensureDeferred
async def test_notifier_handed_on_by_drain_mid_sending_every_mail_exactly_once(tmp_path, prefix,
                                                                             tables):
    """SIGUSR2 (drain) on the holder mid-sending: it finishes its sends, the other goes on.

    A clean hand-over has no at-least-once window: the sends started are
    finished and marked sent before the token goes, the rows not started
    are left pending for the next holder. Every mail arrives exactly once.
    """
    import os
    import signal

    smtp_server = SlowSmtpServer()
    smtp_server.start()
    (tmp_path / "rules.yaml").write_text("[]\n")
    (tmp_path / "alert-routes.yaml").write_text(ROUTES)
    mail = {"smtp": {"port": str(smtp_server.port), "starttls": "never",
                     "sender": "centaure@example.com", "connections": "1"}}
    await threads.deferToThread(declare, prefix)
    nodes = [start(tmp_path, prefix, tables, n, **mail) for n in ("n1", "n2")]

    async def until(predicate, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not await threads.deferToThread(predicate):
            for d in nodes:
                assert d.alive(), d.logs()[-3000:]
            assert time.monotonic() < deadline, f"timed out waiting for {what}: " + \
                " | ".join(d.logs()[-2000:] for d in nodes)
            await sleep(0.05)

    try:
        for d in nodes:
            await threads.deferToThread(d.wait_health, ready)
        await until(lambda: sum(map(notifier_active, nodes)) == 1, "one active notifier", 15)
        active = next(d for d in nodes if notifier_active(d))
        standby = next(d for d in nodes if d is not active)
        t0 = round(time.time() - 60, 3)
        alarms = [alarm(i, t0) for i in range(N)]
        want = {key_of(a) for a in alarms}
        await threads.deferToThread(publish, prefix, alarms)
        await until(lambda: len(smtp_server.inbox) >= N // 4, "the first mails", 15)
        os.kill(active.proc.pid, signal.SIGUSR2)
        drained = time.monotonic()
        await until(lambda: notifier_active(standby), "the standby to take over", 20)
        takeover = time.monotonic() - drained
        keys = lambda: [m[KEY_HEADER] for m in smtp_server.inbox]  # noqa: E731
        await until(lambda: set(keys()) >= want, "every mail", 20)
        await until(lambda: outbox_pending(tables["alerter"]) == 0, "an empty outbox", 10)
        await sleep(1.0)
        counts = collections.Counter(keys())
        assert set(counts) == want and set(counts.values()) == {1}, counts
        assert not notifier_active(active) and active.alive()
        assert "notifier: handed on" in active.logs()
        print(f"\nnotifier drain: standby active {takeover:.2f}s after SIGUSR2")
    finally:
        for d in nodes:
            d.stop()
        await smtp_server.stop()
