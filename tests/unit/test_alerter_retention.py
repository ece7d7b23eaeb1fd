"""Old rows of the alerter's tables go on schedule (SQLite; MariaDB and PostgreSQL in
tests/integration/test_own_tables_retention_sql.py, which reuses the helpers here).

What an operator checks: silences that ended long ago leave ``centaure silence list
--all``, active and recently ended ones stay (and an alarm under an active silence is
still held); sent and failed notifications leave the outbox after ``keep_notified``,
pending ones never; the record of the last notice told for an alarm no group holds any
more (a route without recoveries) goes too, while one of an alarm still in a group stays.
"""

from __future__ import annotations

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor
from twisted.logger import Logger, formatEvent

from connector.metrics import Counters
from connector_alerter import migrate, notifier as notifier_module
from connector_alerter.grouping import Grouper
from connector_alerter.notifier import DeliveryOptions, Notifier
from connector_alerter.outbox import OutboxStore
from connector_alerter.routes import parse_routes
from centaure_shared.storage import silences

DAY = 86400.0
T0 = 1_795_000_000.0


def route(**opts):
    spec = {"name": "r", "email": "a@x.org", "group_wait": 0, "group_interval": 60,
            "repeat_interval": 0}
    spec.update(opts)
    return parse_routes({"routes": [spec]}).routes[0]


def alarm(ref, state="raised", host="h1", t=T0, **kw):
    a = {"ref": ref, "host": host, "name": f"a{ref}", "severity": "major", "state": state,
         "message": "m", "first_seen": t, "last_seen": t, "cleared_at": None, "count": 1,
         "origin": "trap", "acked_by": None, "flapping": False, "cause_ref": None}
    a.update(kw)
    return a


def nohold(r, a, now):
    return None


# -- last-told records ---------------------------------------------------------------


def test_forget_last_drops_raised_records_of_alarms_in_no_group():
    """A route without recoveries: the raise told, the clear dropped, the record stayed for ever."""
    quiet, loud = route(name="quiet", send_resolved=False), route(name="loud")
    g = Grouper([quiet, loud])
    g.add(quiet, {"host": "h1"}, alarm(1), T0)
    g.add(loud, {"host": "h2"}, alarm(2, host="h2"), T0)    # stays active, in its group
    g.due(T0, nohold)
    g.add(quiet, {"host": "h1"}, alarm(1, "cleared", cleared_at=T0 + 5, last_seen=T0 + 5),
          T0 + 5)
    g.due(T0 + 60, nohold)
    assert set(g.last) == {"1", "2"} and g.last["1"]["state"] == "raised"
    assert "1" not in {ref for grp in g.groups.values() for ref in grp["alarms"]}
    g.take_journal()                                         # saved
    assert g.forget_last(T0 - 1) == []                       # nothing old enough yet
    assert g.forget_last(T0 + 7 * DAY) == ["1"]              # 2 is in a group: kept
    assert set(g.last) == {"2"}
    groups, last = g.take_journal().changes(g)
    assert last == {"1": None}                               # the save deletes its row


def test_forget_last_keeps_what_stops_a_late_replay_until_the_cutoff():
    quiet = route(send_resolved=False)
    g = Grouper([quiet])
    g.add(quiet, {"host": "h1"}, alarm(1), T0)
    g.due(T0, nohold)
    g.add(quiet, {"host": "h1"}, alarm(1, "cleared", cleared_at=T0 + 5, last_seen=T0 + 5),
          T0 + 5)
    g.due(T0 + 60, nohold)
    # The raise replayed within the retention: told already, not told again.
    g.add(quiet, {"host": "h1"}, alarm(1), T0 + 100)
    assert g.due(T0 + 200, nohold) == []


# -- the outbox and silences tables ----------------------------------------------------


@pytest.fixture
def store(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'n.sqlite3'}")
    migrate.upgrade(engine)
    yield OutboxStore(engine)
    engine.dispose()


def outbox_rows(store: OutboxStore, now: float) -> dict[str, int]:
    """Rows sent 10 d and 1 d ago, failed 10 d ago, pending since 10 d: name -> id."""
    names = ("sent_old", "sent_new", "failed_old", "pending_old")
    ids = store.save([{"idem_key": n, "route": "r", "channel": "email", "recipient": "a@x.org",
                       "ref": "1", "host": "h1", "payload": {"n": n}} for n in names],
                     {}, {}, now - 10 * DAY)
    by = dict(zip(names, ids))
    store.mark_many([(by["sent_old"], "sent", 1, now - 10 * DAY, None, None),
                     (by["sent_new"], "sent", 1, now - DAY, None, None),
                     (by["failed_old"], "failed", 5, now - 10 * DAY, None, "refused")])
    return by


def add_silences(store: OutboxStore, now: float) -> dict[str, int]:
    """Silences ended 40 d and 2 d ago, removed by hand 31 d ago, active for a year: name -> id."""
    e, p = store.engine, store.schema.prefix
    made = {
        "ended_40d": silences.add(e, p, duration=3600, comment="old", host="h1",
                                  now=now - 40 * DAY - 3600),
        "ended_2d": silences.add(e, p, duration=3600, comment="recent", host="h1",
                                 now=now - 2 * DAY - 3600),
        "removed_31d": silences.add(e, p, duration=365 * DAY, comment="removed",
                                    host="h1", now=now - 32 * DAY),
        "long": silences.add(e, p, duration=365 * DAY, comment="maintenance",
                             host="h9", now=now - 60 * DAY),
    }
    silences.remove(e, p, made["removed_31d"].id, now=now - 31 * DAY)
    return {name: s.id for name, s in made.items()}


def test_outbox_purge_in_batches_keeps_pending_and_recent(store):
    by = outbox_rows(store, T0)
    assert store.purge(T0 - 7 * DAY, batch=1) == 2
    assert sorted(r.idem_key for r in store.rows()) == ["pending_old", "sent_new"]
    assert store.purge(T0 - 7 * DAY, batch=1) == 0
    assert by


def test_silences_ended_before_the_retention_go(store):
    ids = add_silences(store, T0)
    assert store.purge_silences(T0 - 30 * DAY, batch=1) == 2
    left = {s.id for s in silences.list_(store.engine, store.schema.prefix, now=T0,
                                         include_expired=True)}
    assert left == {ids["ended_2d"], ids["long"]}
    # The active one still hides its alarms.
    assert [s.id for s in store.silences(T0) if s.active(T0)] == [ids["long"]]


# -- the notifier's housekeeping ---------------------------------------------------------


class Fake:
    """A notifier on SQLite with a fake clock; sends always succeed."""

    def __init__(self, store, spec, **opts):
        self.now = T0
        self.metrics = Counters("alerter")
        self.lines: list[str] = []
        self.n = Notifier(routes=parse_routes({"routes": [spec]}), store=store,
                          publish=lambda m: None, reactor=reactor,
                          options=DeliveryOptions(**opts), clock=lambda: self.now,
                          run_blocking=lambda f, *a: defer.maybeDeferred(f, *a),
                          metrics=self.metrics)
        self.n._send = lambda row: defer.succeed(None)

    async def tick(self, t):
        self.now = t
        return await self.n.tick(t)


def last_notified(store: OutboxStore) -> list[str]:
    t = store.schema.last_notified
    with store.engine.connect() as c:
        return sorted(c.scalars(sa.select(t.c.ref)))


@pytest_twisted.ensureDeferred
async def test_housekeeping_purges_on_schedule_with_one_line_and_metrics(store, monkeypatch):
    await housekeeping_purges_on_schedule(store, monkeypatch)


async def housekeeping_purges_on_schedule(store: OutboxStore, monkeypatch) -> None:
    """Shared with the integration tests (``store`` on SQLite, MariaDB or PostgreSQL)."""
    p = store.schema.prefix
    lines: list[str] = []
    monkeypatch.setattr(notifier_module, "_log",
                        Logger(observer=lambda e: lines.append(formatEvent(e))))
    f = Fake(store, {"name": "r", "email": "a@x.org", "group_wait": 0, "send_resolved": False},
             keep_notified=7 * DAY, keep_ended_silences=30 * DAY, purge_interval=3600)
    await f.n.start(tick_interval=None)
    await f.n.handle_alarm(alarm(1), now=T0)
    await f.tick(T0 + 1)                              # told: sent, record "raised"
    await f.n.handle_alarm(alarm(1, "cleared", cleared_at=T0 + 2, last_seen=T0 + 2),
                           now=T0 + 2)
    await f.tick(T0 + 3)                              # no recovery on this route
    assert [r.state for r in store.rows()] == ["sent"] and last_notified(store) == ["1"]
    ids = add_silences(store, T0 + 40 * DAY)
    lines.clear()
    await f.tick(T0 + 3 + 3600)                       # housekeeping, nothing old enough
    assert lines == [] and len(store.rows()) == 1
    later = T0 + 40 * DAY
    await f.tick(later)
    assert store.rows() == [] and last_notified(store) == []
    left = {s.id for s in silences.list_(store.engine, p, now=later, include_expired=True)}
    assert left == {ids["ended_2d"], ids["long"]}
    assert [ln for ln in lines if "alerter purge" in ln] == [
        "alerter purge: 1 sent or failed notifications and 1 last-told records older than "
        "7d, 2 silences ended more than 30d ago deleted"]
    assert (f.metrics.get("purged_outbox"), f.metrics.get("purged_last_notified"),
            f.metrics.get("purged_silences")) == (1, 1, 2)
    # Not before purge_interval has passed again.
    silences.add(store.engine, p, duration=60, comment="x", host="h1", now=later - 31 * DAY)
    await f.tick(later + 60)
    assert len(silences.list_(store.engine, p, now=later, include_expired=True)) == 3


@pytest_twisted.ensureDeferred
async def test_housekeeping_failure_is_logged_and_the_notifier_goes_on(store, monkeypatch):
    lines: list[str] = []
    monkeypatch.setattr(notifier_module, "_log",
                        Logger(observer=lambda e: lines.append(formatEvent(e))))
    f = Fake(store, {"name": "r", "email": "a@x.org", "group_wait": 0})
    await f.n.start(tick_interval=None)

    def broken(before, batch=500):
        raise sa.exc.OperationalError("DELETE", {}, Exception("database is locked"))
    monkeypatch.setattr(store, "purge_silences", broken)
    await f.tick(T0)
    assert f.metrics.get("purge_errors") == 1
    assert any("alerter purge failed: " in ln and "database is locked" in ln for ln in lines)
    await f.n.handle_alarm(alarm(5), now=T0 + 1)
    await f.tick(T0 + 2)
    assert [r.state for r in store.rows()] == ["sent"]


# -- the daemon: the purge on the notifier's schedule, the alerter going on -----------------


async def alerter_daemon_purges_and_goes_on(url: str, table_prefix: str, tmp_path) -> None:
    """Old silences and notifications of a site go while the alerter runs; alarms are handled.

    Shared with the integration tests (``url``: SQLite, MariaDB or PostgreSQL).
    """
    import time

    from twisted.internet import task

    from connector import messages
    from connector.metrics import render_prometheus
    from connector.service import makeService
    from connector.settings import settings_from_string

    engine = sa.create_engine(url)
    migrate.upgrade(engine, table_prefix)
    store = OutboxStore(engine, table_prefix)
    now = time.time()
    ids = add_silences(store, now)
    outbox_rows(store, now)
    (tmp_path / "rules.yaml").write_text("[]\n")
    (tmp_path / "alert-routes.yaml").write_text(
        "routes:\n  - name: all\n    group_wait: 0s\n    webhook: [http://127.0.0.1:9/hook]\n")
    settings = settings_from_string(
        f"[bus]\nurl = embedded\n\n[buffer]\npath = {tmp_path}/b-{{connector}}.sqlite3\n\n"
        f"[connector]\nhttp_port = 0\n\n[database]\nurl = {url}\n\n"
        f"[alerter]\ntable_prefix = {table_prefix}\npurge_interval = 1s\n"
        "retry_initial = 1h\n", source=str(tmp_path / "settings.ini"))
    root = makeService({"settings": settings}, ["alerter"], "alerter")
    publisher = root.runtime.bus.publisher("correlator")

    def silence_ids() -> set[int]:
        return {s.id for s in silences.list_(engine, table_prefix, now=now,
                                             include_expired=True)}

    async def until(predicate, what: str, timeout: float = 20.0):
        for _ in range(int(timeout / 0.05)):
            if predicate():
                return
            await task.deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"timed out waiting for {what}")

    root.startService()
    try:
        await until(lambda: silence_ids() == {ids["ended_2d"], ids["long"]},
                    "the silences ended long ago purged")
        await until(lambda: sorted(r.idem_key for r in store.rows())
                    == ["pending_old", "sent_new"], "the old notifications purged")
        metrics = render_prometheus(root.runtime.all_counters())
        assert 'centaure_purged_silences_total{connector="alerter"} 2' in metrics
        assert 'centaure_purged_outbox_total{connector="alerter"} 2' in metrics
        # The alerter goes on: an alarm is routed and queued for its receiver.
        await publisher.publish(messages.Alarm(
            ts=now, source="correlator@t", host="r7", ref=77, name="linkDown",
            severity="major", state="raised", message="down", first_seen=now, last_seen=now,
            count=1, origin="trap"))
        await until(lambda: any(r.ref == "77" for r in store.rows()), "the alarm queued")
        await task.deferLater(reactor, 1.5, lambda: None)  # more passes: the rest stays
        assert silence_ids() == {ids["ended_2d"], ids["long"]}
        assert any(r.ref == "77" for r in store.rows())
    finally:
        await root.stopService()
        engine.dispose()


@pytest_twisted.ensureDeferred
async def test_alerter_daemon_purges_and_goes_on(tmp_path):
    await alerter_daemon_purges_and_goes_on(f"sqlite:///{tmp_path}/c.sqlite3", "alert_",
                                            tmp_path)
