"""The Notifier with fake channels and a fake clock: backoff, give-up, mute windows, acks."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor, task

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


class CountingStore(OutboxStore):
    """An outbox that counts its transactions and what each one writes."""

    def __init__(self, engine):
        super().__init__(engine)
        self.saves = []
        self.marks = []
        self.fail_saves = 0

    def save(self, rows, groups, last, now):
        if self.fail_saves:
            self.fail_saves -= 1
            raise sa.exc.OperationalError("INSERT", {}, Exception("database gone"))
        self.saves.append((len(list(rows)), len(groups), len(last)))
        return super().save(rows, groups, last, now)

    def mark_many(self, marks):
        marks = list(marks)
        self.marks.append(len(marks))
        return super().mark_many(marks)


@pytest.fixture
def counting(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    migrate.upgrade(engine)
    yield CountingStore(engine)
    engine.dispose()


def host_alarm(i, t=T0):
    return alarm(i, host=f"h{i:04d}", t=t)


@pytest_twisted.ensureDeferred
async def test_intake_writes_only_the_group_that_changed(counting):
    f = Fake(counting, {"name": "r", "email": "a@x.org", "group_by": ["host"],
                        "group_wait": 30})
    await f.n.start(tick_interval=None)
    for i in range(300):
        await f.n.handle_alarm(host_alarm(i), T0)
    # One group row per alarm, whatever the number of groups already there.
    assert counting.saves == [(0, 1, 0)] * 300
    with counting.engine.connect() as conn:
        n_groups = conn.scalar(sa.select(sa.func.count()).select_from(counting.schema.groups))
    assert n_groups == 300
    # The flush writes the 300 groups and their 300 rows in one transaction...
    await f.tick(T0 + 30)
    assert counting.saves[-1] == (300, 300, 300) and len(f.sent) == 300
    # ...and a tick with nothing due writes nothing.
    await f.tick(T0 + 31)
    assert len(counting.saves) == 301


@pytest_twisted.ensureDeferred
async def test_a_failed_save_changes_nothing_and_the_alarm_is_taken_again(counting):
    f = Fake(counting, {"name": "r", "email": "a@x.org", "group_by": ["host"],
                        "group_wait": 0})
    await f.n.start(tick_interval=None)
    await f.n.handle_alarm(host_alarm(1), T0)
    before = f.n.grouper.export()
    counting.fail_saves = 1
    with pytest.raises(sa.exc.OperationalError):
        await f.n.handle_alarm(host_alarm(2), T0)
    assert f.n.grouper.export() == before        # not acked, not kept
    await f.n.handle_alarm(host_alarm(2), T0)    # redelivered
    await f.tick(T0)
    assert sorted(r.ref for r in f.sent) == ["1", "2"]


class Later:
    """run_blocking that answers on a later reactor turn, as a thread would."""

    def __init__(self):
        self.calls = 0

    def __call__(self, fn, *args):
        self.calls += 1
        d = defer.Deferred()

        def run():
            try:
                d.callback(fn(*args))
            except Exception:
                d.errback()
        reactor.callLater(0, run)
        return d


@pytest_twisted.ensureDeferred
async def test_alarms_arriving_during_a_commit_share_the_next_one(counting):
    f = Fake(counting, {"name": "r", "email": "a@x.org", "group_by": ["host"],
                        "group_wait": 30})
    f.n.run_blocking = Later()
    await f.n.start(tick_interval=None)
    # A full prefetch window at once: the first alarm commits alone, the
    # 99 that came meanwhile commit together; every one waits for its commit.
    results = await defer.gatherResults([defer.ensureDeferred(f.n.handle_alarm(host_alarm(i), T0))
                                         for i in range(100)])
    assert results == [1] * 100
    assert counting.saves == [(0, 1, 0), (0, 99, 0)]
    assert len(counting.load()[0]) == 100


@pytest_twisted.ensureDeferred
async def test_a_failed_group_commit_fails_every_alarm_in_it(counting):
    f = Fake(counting, {"name": "r", "email": "a@x.org", "group_by": ["host"],
                        "group_wait": 30})
    f.n.run_blocking = Later()
    await f.n.start(tick_interval=None)
    counting.fail_saves = 1
    ds = [defer.ensureDeferred(f.n.handle_alarm(host_alarm(i), T0)) for i in range(10)]
    results = await defer.DeferredList(ds, consumeErrors=True)
    # The first commit failed: it and the alarms decided on top of it are not
    # acked, and the state is as before all of them.
    assert [ok for ok, _ in results] == [False] * 10
    assert f.n.grouper.groups == {} and counting.load() == ({}, {})


@pytest_twisted.ensureDeferred
async def test_one_tick_delivers_every_due_row_and_records_outcomes_together(counting):
    from connector_alerter.notifier import DELIVER_BATCH

    n = DELIVER_BATCH * 2 + 50
    f = Fake(counting, {"name": "r", "email": "a@x.org", "group_by": ["host"],
                        "group_wait": 0})
    await f.n.start(tick_interval=None)
    for i in range(n):
        await f.n.handle_alarm(host_alarm(i), T0)
    f.n.run_blocking = Later()  # commits take a reactor turn, as on a thread
    await f.tick(T0)
    assert len(f.sent) == n and len({r.id for r in f.sent}) == n
    assert counting.rows("pending") == [] and len(counting.rows("sent")) == n
    # Outcomes that ended while a record was being written share the next one.
    assert sum(counting.marks) == n and len(counting.marks) <= n // 10, counting.marks
    assert sum(1 for p in f.published if p.state == "sent") == n
    await f.tick(T0 + 1)
    assert len(f.sent) == n                       # never twice


@pytest_twisted.ensureDeferred
async def test_a_slow_send_does_not_hold_back_the_records_of_the_others(counting):
    """A crash re-sends only what was accepted and not yet recorded: not a whole batch."""
    f = Fake(counting, {"name": "r", "email": "a@x.org", "group_by": ["host"],
                        "group_wait": 0})
    await f.n.start(tick_interval=None)
    for i in range(5):
        await f.n.handle_alarm(host_alarm(i), T0)
    slow = defer.Deferred()
    fast_send = f._send
    f.n._send = lambda row: slow if row.ref == "0" else fast_send(row)
    delivering = defer.ensureDeferred(f.tick(T0))
    for _ in range(5):
        await task.deferLater(reactor, 0, lambda: None)
    states = {r.ref: r.state for r in counting.rows()}
    assert states == {"0": "pending", "1": "sent", "2": "sent", "3": "sent", "4": "sent"}
    assert not delivering.called
    slow.callback(None)
    await delivering
    assert {r.ref: r.state for r in counting.rows()}["0"] == "sent"


@pytest_twisted.ensureDeferred
async def test_outcomes_of_one_batch_are_each_recorded(counting, monkeypatch):
    monkeypatch.setattr("connector.retry.random.uniform", lambda a, b: 1.0)
    f = Fake(counting, {"name": "r", "email": "a@x.org", "group_by": ["host"],
                        "group_wait": 0})
    await f.n.start(tick_interval=None)
    for i in range(3):
        await f.n.handle_alarm(host_alarm(i), T0)
    f.outcomes = ["ok", "down", "permanent"]
    await f.tick(T0)
    by_ref = {r.ref: r for r in counting.rows()}
    assert by_ref["0"].state == "sent"
    assert by_ref["1"].state == "pending" and by_ref["1"].next_at == T0 + 10
    assert by_ref["2"].state == "failed" and by_ref["2"].attempts == 1
    assert sorted((p.ref, p.state) for p in f.published) == [
        (0, "sent"), (1, "failed"), (2, "failed")]
    await f.tick(T0 + 10)
    assert counting.rows("pending") == [] and len(f.sent) == 2


def test_delivery_options_from_settings():
    from connector.settings import settings_from_string

    o = DeliveryOptions.from_settings(settings_from_string(
        "[smtp]\nhost = relay.example.net\nconnections = 2\n\n"
        "[alerter]\nmax_concurrent_sends = 5\n"))
    assert (o.smtp_host, o.smtp_connections, o.max_concurrent) == ("relay.example.net", 2, 5)
    defaults = DeliveryOptions.from_settings(settings_from_string(""))
    assert (defaults.smtp_connections, defaults.max_concurrent) == (4, 64)
