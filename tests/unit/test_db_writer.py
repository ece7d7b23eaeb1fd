"""The SQL writer's storage core on SQLite: idempotency, batching, faults, threads."""

from __future__ import annotations

import threading

import msgspec
import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor, task

from connector.consumer import Delivery, RejectedMessage
from connector.messages import Alarm, Event, Metric, Perf, Varbind
from centaure_shared.storage.schema import create_all, make_schema
from connector_db.store import NormalizedStore, UnstorableMessage
from connector_db.writer import SqlWriter
from tests.sql_samples import sample_rows

TS = 1_700_000_000.25


def perf(host="r1.example.net", n=50, ts=TS, **overrides) -> Perf:
    metrics = [Metric(name=f"m{i % 10}", index=str(i // 10), value=float(i), kind="gauge",
                      unit="V", oid=f"1.3.6.1.4.1.9.{i}") for i in range(n)]
    metrics = overrides.pop("metrics", metrics)
    return Perf(ts=ts, source="centaure-snmp@n1", host=host, address="10.0.0.1",
                device_type="router", metrics=metrics)


def event(ts=TS) -> Event:
    return Event(ts=ts, source="centaure-traps@n1", host="r1.example.net",
                 address="10.0.0.1", snmp_version="v2c", trap_oid="1.3.6.1.6.3.1.1.5.3",
                 name="linkDown", severity="major",
                 varbinds=[Varbind(oid="1.3.6.1.2.1.2.2.1.1.3", type="Integer", value=3)],
                 message="link 3 down", action="raise", alarm="linkDown", key="3")


def delivery(mid: str | None) -> Delivery:
    return Delivery(body=b"", exchange="x", routing_key="k", message_id=mid)


def count(engine, table) -> int:
    with engine.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


@pytest.fixture
def db(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path}/w.sqlite3")
    schema = make_schema("c_")
    create_all(engine, schema)
    yield engine, schema
    engine.dispose()


@pytest.fixture
def make_writer(db):
    writers = []

    def make(**kw) -> SqlWriter:
        w = SqlWriter(NormalizedStore(db[0], db[1]), reactor, **kw)
        writers.append(w)
        return w

    yield make
    for w in writers:
        w.stop_pool()


@pytest_twisted.ensureDeferred
async def test_perf_of_50_metrics_stores_50_samples_and_creates_ids_once(db, make_writer):
    engine, s = db
    w = make_writer(batch_interval=0.01)
    await w.handle(perf(), delivery("p1"))
    assert count(engine, s.samples) == 50
    assert count(engine, s.devices) == 1
    assert count(engine, s.metrics) == 10
    await w.handle(perf(ts=TS + 60), delivery("p2"))
    assert count(engine, s.samples) == 100
    assert count(engine, s.devices) == 1 and count(engine, s.metrics) == 10
    assert count(engine, s.series) == 50  # one per metric and index, created once
    with engine.connect() as c:
        row = next(r for r in sample_rows(c, s) if r["idx"] == "4")
    assert row["ts"] == 1_700_000_000_250 and row["value_num"] == 40.0
    assert row["value_text"] is None
    assert w.rows_written[s.samples.name] == 100
    assert w.health()["degraded"] is False and w.counters.get("batches") == 2


@pytest_twisted.ensureDeferred
async def test_replayed_perf_and_event_write_no_duplicates(db, make_writer):
    engine, s = db
    w = make_writer(batch_interval=0.01)
    await w.handle(perf(), delivery("p1"))
    await w.handle(event(), delivery("e1"))
    # Replay in a later batch, by a new process (empty id cache) too.
    await w.handle(perf(), delivery("p1"))
    await w.handle(event(), delivery("e1"))
    w2 = make_writer(batch_interval=0.01)
    await defer.gatherResults([w2.handle(perf(), delivery("p1")),
                               w2.handle(event(), delivery("e1")),
                               w2.handle(event(), delivery("e1"))])
    assert count(engine, s.samples) == 50
    assert count(engine, s.events) == 1
    assert count(engine, s.devices) == 1 and count(engine, s.metrics) == 10
    # Without a message_id, the body's hash keys the event.
    await defer.gatherResults([w.handle(event(ts=TS + 1), delivery(None)),
                               w.handle(event(ts=TS + 1), delivery(None))])
    assert count(engine, s.events) == 2


@pytest_twisted.ensureDeferred
async def test_alarm_current_state_and_history(db, make_writer):
    engine, s = db
    w = make_writer(batch_interval=0.01)
    ref = 2**64 - 1

    def alarm(ts, state):
        return Alarm(ts=ts, source="centaure-correlator@n1", host="r1", ref=ref, name="linkDown",
                     severity="major", state=state, message="m", first_seen=TS, last_seen=ts,
                     count=1, origin="trap")

    await defer.gatherResults([w.handle(alarm(TS + 2, "cleared"), delivery("a2")),
                               w.handle(alarm(TS, "raised"), delivery("a1"))])
    await w.handle(alarm(TS, "raised"), delivery("a1"))  # replay of an older one
    assert count(engine, s.alarm_history) == 2
    with engine.connect() as c:
        row = c.execute(sa.select(s.alarms)).one()
    assert row.ref == ref and row.state == "cleared"


@pytest_twisted.ensureDeferred
async def test_unstorable_message_fails_alone(db, make_writer):
    engine, s = db
    w = make_writer(batch_size=10_000, batch_interval=0.05)
    long_text = [Metric(name="sysDescr", value="x" * 1000, kind="text", oid="1.3.6.1.2.1.1.1.0")]
    nan = [Metric(name="temp", value=float("nan"), kind="gauge", oid="1.3.6.1.4.1.1")]
    ok1 = w.handle(perf(host="a"), delivery("ok1"))
    bad1 = w.handle(perf(host="b", metrics=long_text), delivery("bad1"))
    bad2 = w.handle(perf(host="c", metrics=nan), delivery("bad2"))
    ok2 = w.handle(event(), delivery("ok2"))
    results = await defer.DeferredList([ok1, bad1, bad2, ok2], consumeErrors=True)
    assert [r[0] for r in results] == [True, False, False, True]
    assert results[1][1].check(UnstorableMessage)
    assert "longer than 255" in str(results[1][1].value)
    assert "not a finite number" in str(results[2][1].value)
    assert count(engine, s.samples) == 50 and count(engine, s.events) == 1
    assert w.counters.get("rejected") == 2 and w.counters.get("batches") == 1


@pytest_twisted.ensureDeferred
async def test_batches_by_size(db, make_writer):
    engine, s = db
    # 120 rows per batch at most: 5 perfs of 50 metrics make 3 batches, with
    # no timer needed (a long interval would otherwise hold them).
    w = make_writer(batch_size=120, batch_interval=30)
    ds = [w.handle(perf(ts=TS + i), delivery(f"p{i}")) for i in range(5)]
    await defer.gatherResults(ds[:4])
    assert w.counters.get("batches") >= 2
    assert count(engine, s.samples) >= 200
    # The fifth is below the size: the timer (30 s) holds it until close().
    await w.close()
    await ds[4]
    assert count(engine, s.samples) == 250 and w.counters.get("batches") == 3


@pytest_twisted.ensureDeferred
async def test_batches_by_time(db, make_writer):
    engine, s = db
    clock = task.Clock()
    w = SqlWriter(NormalizedStore(engine, s), clock, batch_size=10_000, batch_interval=0.5)
    try:
        # deferToThreadPool calls back through the clock's callFromThread: use
        # the real reactor for that part.
        clock.callFromThread = reactor.callFromThread
        d1 = w.handle(perf(ts=TS), delivery("p1"))
        d2 = w.handle(perf(ts=TS + 1), delivery("p2"))
        clock.advance(0.4)
        assert not d1.called and count(engine, s.samples) == 0
        clock.advance(0.1)
        await defer.gatherResults([d1, d2])
        assert count(engine, s.samples) == 100 and w.counters.get("batches") == 1
    finally:
        w.stop_pool()


@pytest_twisted.ensureDeferred
async def test_real_timer_with_small_interval(db, make_writer):
    engine, s = db
    w = make_writer(batch_size=10_000, batch_interval=0.02)
    await w.handle(event(), delivery("e1"))
    assert count(engine, s.events) == 1


@pytest_twisted.ensureDeferred
async def test_unreachable_table_keeps_batch_unacked_and_retries_until_back(db, make_writer):
    engine, s = db
    w = make_writer(batch_size=10_000, batch_interval=0.01, retry_initial=0.05, retry_max=0.1)
    s.samples.drop(engine)  # SQLite: "no such table", an OperationalError, as an outage
    ds = [w.handle(perf(), delivery("p1")), w.handle(event(), delivery("e1"))]
    await _until(lambda: w.counters.get("outage_retries") >= 3)
    # Nothing acked and nothing half-written while the database fails.
    assert not any(d.called for d in ds)
    assert count(engine, s.events) == 0
    assert w.health()["degraded"] is True and w.health()["last_error"]
    assert w.health()["pending_messages"] == 2
    s.samples.create(engine)
    await defer.gatherResults(ds)
    assert w.health()["degraded"] is False
    assert count(engine, s.samples) == 50 and count(engine, s.events) == 1


@pytest_twisted.ensureDeferred
async def test_close_during_an_outage_fails_the_waiting_messages(db, make_writer):
    engine, s = db
    w = make_writer(batch_size=10_000, batch_interval=0.01, retry_initial=0.05, retry_max=0.1)
    s.events.drop(engine)
    d = w.handle(event(), delivery("e1"))
    await _until(lambda: w.counters.get("outage_retries") >= 1)
    await w.close()
    with pytest.raises(RuntimeError, match="not written"):
        await d


@pytest_twisted.ensureDeferred
async def test_value_refused_by_database_rejects_only_that_message(db, make_writer):
    engine, s = db
    w = make_writer(batch_size=10_000, batch_interval=0.01)
    # A rule only the database knows (a trigger) refuses one row.
    with engine.begin() as c:
        c.exec_driver_sql(f"CREATE TRIGGER {s.prefix}refuse BEFORE INSERT ON {s.events.name} "
                          "WHEN NEW.name = 'bad' BEGIN SELECT RAISE(ABORT, 'bad name'); END")
    bad = msgspec.structs.replace(event(), name="bad")
    ds = [w.handle(perf(), delivery("p1")), w.handle(bad, delivery("e-bad")),
          w.handle(event(), delivery("e-good"))]
    results = await defer.DeferredList(ds, consumeErrors=True)
    assert [ok for ok, _ in results] == [True, False, True]
    assert results[1][1].check(RejectedMessage)
    assert "refused" in results[1][1].getErrorMessage()
    assert count(engine, s.samples) == 50 and count(engine, s.events) == 1


async def _until(cond, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition not met in time")


@pytest_twisted.ensureDeferred
async def test_reactor_thread_never_runs_sql(db, make_writer):
    engine, s = db
    threads_seen = set()

    @sa.event.listens_for(engine, "before_cursor_execute")
    def seen(conn, cursor, statement, params, context, executemany):
        threads_seen.add(threading.get_ident())

    try:
        w = make_writer(batch_size=60, batch_interval=0.01)
        await defer.gatherResults([w.handle(perf(ts=TS + i), delivery(f"p{i}")) for i in range(3)]
                                  + [w.handle(event(), delivery("e1"))])
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    reactor_thread = threading.get_ident()  # the test body runs in the reactor thread
    assert threads_seen and reactor_thread not in threads_seen


def test_prefix_is_validated():
    for bad in ("1x", "X_", "a-b", "a" * 32, "a;drop"):
        with pytest.raises(ValueError):
            make_schema(bad)
    assert make_schema("ok_1").samples.name == "ok_1samples"
