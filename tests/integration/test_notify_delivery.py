"""Live delivery on the real reactor and Twisted's ESMTP server: no waiting for the tick.

The notifier is started with a tick of an hour: any mail that arrives was
sent because its group's time came or a retry fell due, not by a tick.
SMTP sessions are reused: many mails, few connections.
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from connector.messages import Alarm, decode, encode
from connector_alerter import channels
from connector_alerter.notifier import DeliveryOptions, Notifier
from connector_alerter.routes import parse_routes
from tests.outbox import sqlite_outbox
from tests.smtpserver import running_smtp_server

pytestmark = pytest.mark.integration

HOUR = 3600.0


smtp_server = pytest.fixture(running_smtp_server, name="smtp_server")


store = pytest.fixture(sqlite_outbox, name="store")


def alarm(ref, host, t):
    return decode(encode(Alarm(source="c@n1", ts=t, host=host, ref=ref, name="linkDown",
                               severity="major", state="raised", message="down",
                               first_seen=t, last_seen=t, count=1, origin="trap")))


def notifier(store, port, published, group_wait=0, **opts):
    routes = parse_routes({"routes": [{"name": "noc", "email": "noc@example.com",
                                       "group_by": ["host"], "group_wait": group_wait,
                                       "group_interval": 60, "repeat_interval": 0}]})
    o = dict(smtp_port=port, starttls="never", smtp_timeout=5, retry_initial=0.5,
             retry_max=1, max_attempts=10)
    o.update(opts)
    return Notifier(routes=routes, store=store, publish=published.append, reactor=reactor,
                    options=DeliveryOptions(**o))


async def until(predicate, limit=20.0):
    """Wait for ``predicate`` (a generous limit: this is not a timing test)."""
    deadline = time.monotonic() + limit
    while not predicate() and time.monotonic() < deadline:
        await task.deferLater(reactor, 0.02, lambda: None)
    return predicate()


@pytest_twisted.ensureDeferred
async def test_mail_goes_out_without_waiting_for_the_tick(smtp_server, store):
    published = []
    n = notifier(store, smtp_server.port, published)
    await n.start(tick_interval=HOUR)
    try:
        await task.deferLater(reactor, 0.1, lambda: None)   # the start-up tick is over
        await n.handle_alarm(alarm(1, "r1", time.time()))
        assert await until(lambda: len(smtp_server.inbox) == 1)
        assert await until(lambda: [p.state for p in published] == ["sent"])
        assert store.rows("sent")[0].ref == "1"
    finally:
        n.stop()


@pytest_twisted.ensureDeferred
async def test_group_wait_ends_on_a_timer_and_groups_alarms(smtp_server, store):
    published = []
    n = notifier(store, smtp_server.port, published, group_wait=1)
    await n.start(tick_interval=HOUR)
    try:
        await task.deferLater(reactor, 0.1, lambda: None)
        t = time.time()
        await n.handle_alarm(alarm(1, "r1", t))
        await n.handle_alarm(alarm(2, "r1", t))
        assert await until(lambda: len(smtp_server.inbox) == 1)
        assert smtp_server.inbox[0]["Subject"].startswith("[Centaure] 2 active - r1")
    finally:
        n.stop()


@pytest_twisted.ensureDeferred
async def test_many_mails_few_connections_each_once(smtp_server, store):
    published = []
    n = notifier(store, smtp_server.port, published, smtp_connections=2)
    await n.start(tick_interval=HOUR)
    try:
        t = time.time()
        await defer.gatherResults([defer.ensureDeferred(n.handle_alarm(alarm(i, f"h{i}", t)))
                                   for i in range(60)])
        assert await until(lambda: len(smtp_server.inbox) == 60)
        assert await until(lambda: len(store.rows("sent")) == 60)
        keys = [m["Idempotency-Key"] for m in smtp_server.inbox]
        assert len(set(keys)) == 60
        assert smtp_server.connections <= 10      # not one per mail
        # Records are published once the commit is back on the reactor thread,
        # a moment after the rows read above were committed.
        assert await until(lambda: sum(p.state == "sent" for p in published) == 60)
        await task.deferLater(reactor, 0.2, lambda: None)
        assert sum(p.state == "sent" for p in published) == 60   # and never more
    finally:
        n.stop()


@pytest_twisted.ensureDeferred
async def test_relay_down_then_back_retried_when_due_exactly_once(smtp_server, store):
    published = []
    n = notifier(store, smtp_server.port, published)
    await smtp_server.stop()
    await n.start(tick_interval=HOUR)
    try:
        t = time.time()
        for i in range(5):
            await n.handle_alarm(alarm(i, f"h{i}", t))
        assert await until(lambda: sum(p.state == "failed" for p in published) >= 5)
        assert all("retry in" in p.reason for p in published if p.state == "failed")
        smtp_server.start()                                # back, same port
        assert await until(lambda: len(store.rows("sent")) == 5)
        await task.deferLater(reactor, 1.5, lambda: None)  # a later retry would show now
        assert sorted(m["Idempotency-Key"] for m in smtp_server.inbox) == sorted(
            r.idem_key for r in store.rows("sent"))
        assert len(smtp_server.inbox) == 5
    finally:
        n.stop()


@pytest_twisted.ensureDeferred
async def test_mailer_refused_message_fails_alone_and_the_session_goes_on(smtp_server):
    from tests.smtpserver import MailDelivery
    from twisted.mail import smtp

    class Picky(MailDelivery):
        def validateTo(self, user):
            if user.dest.local == b"nobody":
                raise smtp.SMTPBadRcpt(user)
            return super().validateTo(user)

    build = smtp_server._factory

    def factory():
        f = build()
        inner = f.buildProtocol

        def picky(addr):
            p = inner(addr)
            p.delivery = Picky(smtp_server.inbox)
            return p
        f.buildProtocol = picky
        return f
    smtp_server._factory = factory
    await smtp_server.stop()
    smtp_server.start()
    before = smtp_server.connections
    mailer = channels.Mailer(reactor, host="127.0.0.1", port=smtp_server.port,
                             starttls="never", timeout=5, connections=1)
    msg = channels.build_email("a@example.com", ["x@example.com"], "s", "t", "<p>h</p>", "k",
                               1.0)
    ds = [mailer.send("a@example.com", [to], msg)
          for to in ("x@example.com", "nobody@example.com", "y@example.com")]
    results = await defer.DeferredList(ds, consumeErrors=True)
    assert [ok for ok, _ in results] == [True, False, True]
    assert not results[1][1].value.retryable          # 550: permanent
    assert len(smtp_server.inbox) == 2 and smtp_server.connections - before == 1


@pytest_twisted.ensureDeferred
async def test_mailer_relay_down_fails_every_queued_message_retryable():
    mailer = channels.Mailer(reactor, host="127.0.0.1", port=1, starttls="never", timeout=5)
    ds = [mailer.send("a@example.com", ["x@example.com"], b"Subject: s\n\nbody\n")
          for _ in range(10)]
    results = await defer.DeferredList(ds, consumeErrors=True)
    assert all(not ok and f.value.retryable for ok, f in results)
