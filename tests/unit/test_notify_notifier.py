"""The Notifier with fake channels and a fake clock: backoff, give-up, mute windows, acks."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor

from connector_alerter import channels, migrate
from connector_alerter.notifier import DeliveryOptions, Notifier
from connector_alerter.outbox import OutboxStore
from connector_alerter.routes import parse_routes

# Monday 2026-11-23 12:00 in Paris.
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=ZoneInfo("Europe/Paris")).timestamp()


@pytest.fixture
def store(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'n.sqlite3'}")
    migrate.upgrade(engine)
    yield OutboxStore(engine)
    engine.dispose()


def alarm(ref, state="raised", t=T0, **kw):
    a = {"ref": ref, "host": "h1", "name": f"a{ref}", "severity": "major", "state": state,
         "message": "m", "first_seen": t, "last_seen": t, "cleared_at": None, "count": 1,
         "origin": "trap", "acked_by": None, "flapping": False, "cause_ref": None}
    a.update(kw)
    return a


class Fake:
    """A notifier whose sends answer from a script of outcomes."""

    def __init__(self, store, spec, **opts):
        self.now = T0
        self.published = []
        self.sent = []
        self.outcomes = []
        o = dict(retry_initial=10, retry_max=40, max_attempts=5)
        o.update(opts)
        self.n = Notifier(routes=parse_routes({"routes": [spec]}), store=store,
                          publish=self.published.append, reactor=reactor,
                          options=DeliveryOptions(**o), clock=lambda: self.now,
                          run_blocking=lambda f, *a: defer.maybeDeferred(f, *a))
        self.n._send = self._send

    def _send(self, row):
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if outcome == "ok":
            self.sent.append(row)
            return defer.succeed(None)
        return defer.fail(channels.DeliveryError(outcome, outcome != "permanent"))

    async def tick(self, t):
        self.now = t
        return await self.n.tick(t)


@pytest_twisted.ensureDeferred
async def test_backoff_doubles_up_to_the_maximum_then_gives_up(store, monkeypatch):
    monkeypatch.setattr("connector.retry.random.uniform", lambda a, b: 1.0)
    f = Fake(store, {"name": "r", "email": "a@x.org", "group_wait": 0})
    await f.n.start(tick_interval=None)
    f.outcomes = ["down"] * 10
    await f.n.handle_alarm(alarm(1), T0)
    waits = []
    t = T0
    for _ in range(5):
        await f.tick(t)
        row = store.rows()[0]
        if row.state != "pending":
            break
        waits.append(row.next_at - t)
        t = row.next_at
    assert waits == [10, 20, 40, 40]
    assert store.rows()[0].state == "failed" and store.rows()[0].attempts == 5
    assert [p.attempts for p in f.published] == [1, 2, 3, 4, 5]
    assert "gave up after 5 attempts" in f.published[-1].reason
    await f.tick(t + 1000)
    assert f.sent == []


@pytest_twisted.ensureDeferred
async def test_permanent_failure_is_not_retried(store):
    f = Fake(store, {"name": "r", "email": "a@x.org", "group_wait": 0})
    await f.n.start(tick_interval=None)
    f.outcomes = ["permanent"]
    await f.n.handle_alarm(alarm(1), T0)
    await f.tick(T0)
    await f.tick(T0 + 10000)
    assert [p.state for p in f.published] == ["failed"] and f.sent == []


@pytest_twisted.ensureDeferred
async def test_mute_window_suppresses_then_tells_when_it_closes(store):
    f = Fake(store, {"name": "r", "email": "a@x.org", "group_wait": 0, "mute": [
        {"weekdays": ["mon"], "hours": "11:00-13:00", "timezone": "Europe/Paris"}]})
    await f.n.start(tick_interval=None)
    await f.n.handle_alarm(alarm(1), T0)
    await f.tick(T0)
    assert [(p.state, p.reason) for p in f.published] == [
        ("suppressed", "mute window of route r")]
    await f.tick(T0 + 3599)
    assert f.sent == []
    await f.tick(T0 + 3600)
    assert len(f.sent) == 1 and f.published[-1].state == "sent"


@pytest_twisted.ensureDeferred
async def test_acked_alarms_only_with_notify_acked(store):
    f = Fake(store, {"name": "r", "email": "a@x.org", "group_wait": 0})
    await f.n.start(tick_interval=None)
    await f.n.handle_alarm(alarm(1, acked_by="bob"), T0)
    await f.tick(T0)
    assert f.sent == [] and "acked by bob" in f.published[0].reason
    g = Fake(store, {"name": "s", "email": "a@x.org", "group_wait": 0, "notify_acked": True})
    await g.n.start(tick_interval=None)
    await g.n.handle_alarm(alarm(2, acked_by="bob"), T0)
    await g.tick(T0)
    assert len(g.sent) == 1


@pytest_twisted.ensureDeferred
async def test_unrouted_alarm_is_ignored(store):
    f = Fake(store, {"name": "r", "email": "a@x.org", "match": {"severity": "critical"}})
    await f.n.start(tick_interval=None)
    assert await f.n.handle_alarm(alarm(1), T0) == 0
    assert await f.tick(T0 + 1000) == []


def test_ledger_hides_webhook_tokens():
    from connector_alerter.notifier import shown_recipient

    assert shown_recipient("webhook", "https://hooks.slack.com/services/T0/B0/XyZ") == \
        "https://hooks.slack.com/services/***"
    assert shown_recipient("webhook", "http://u:pw@h.example:8080/hook?token=abc") == \
        "http://h.example:8080/hook/***"
    assert shown_recipient("webhook", "https://h.example") == "https://h.example/"
    assert shown_recipient("email", "a@x.org") == "a@x.org"
