"""The SQL writer against the real MariaDB and PostgreSQL of this machine.

Each test builds the whole layout under a unique table prefix in database
``test`` and drops every table afterwards.
"""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor

from connector.consumer import Delivery
from connector.messages import Alarm, Event, Metric, Notification, Perf, Varbind
from centaure_shared.storage.schema import create_all, drop_all, make_schema
from connector_db.store import NormalizedStore
from connector_db.writer import SqlWriter

from tests.conftest import SQL_URLS

pytestmark = pytest.mark.integration

URLS = SQL_URLS
TS = 1_700_000_000.125
MAX_REF = 2**64 - 1


@pytest.fixture(params=sorted(URLS))
def db(request):
    engine = sa.create_engine(URLS[request.param])
    schema = make_schema(f"t{uuid.uuid4().hex[:10]}_")
    create_all(engine, schema)
    writers: list[SqlWriter] = []
    try:
        yield engine, schema, writers
    finally:
        for w in writers:
            w.stop_pool()
        drop_all(engine, schema)
        with engine.connect() as c:
            left = [n for n in sa.inspect(c).get_table_names() if n.startswith(schema.prefix)]
        engine.dispose()
        assert not left, left


def writer(db, **kw) -> SqlWriter:
    engine, schema, writers = db
    w = SqlWriter(NormalizedStore(engine, schema), reactor, **kw)
    writers.append(w)
    return w


def perf(host="r1.example.net", n=50, ts=TS) -> Perf:
    return Perf(ts=ts, source="centaure-snmp@n1", host=host, address="10.0.0.1",
                device_type="router",
                metrics=[Metric(name=f"m{i % 10}", index=str(i // 10),
                                value=float(i) if i % 7 else f"text {i}",
                                kind="gauge" if i % 7 else "text", oid=f"1.3.6.1.4.1.9.{i}")
                         for i in range(n)])


def event() -> Event:
    return Event(ts=TS, source="centaure-traps@n1", host="r1.example.net", address="10.0.0.1",
                 snmp_version="v2c", trap_oid="1.3.6.1.6.3.1.1.5.3", name="linkDown",
                 severity="major", varbinds=[Varbind(oid="1.3.6.1.2.1.2.2.1.1.3",
                                                     type="Integer", value=3)],
                 message="link 3 down", action="raise", alarm="linkDown", key="3")


def alarm(ts=TS, state="raised") -> Alarm:
    return Alarm(ts=ts, source="centaure-correlator@n1", host="r1.example.net", ref=MAX_REF,
                 name="linkDown", severity="major", state=state, message="link 3 down",
                 first_seen=TS, last_seen=ts, count=1, origin="trap", cause_ref=MAX_REF - 1)


def dl(mid):
    return Delivery(body=b"", exchange="x", routing_key="k", message_id=mid)


def count(engine, table) -> int:
    with engine.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def count_samples(engine, s) -> int:
    """Samples stored: numbers and texts (every seventh metric of ``perf`` is a text)."""
    return count(engine, s.samples) + count(engine, s.samples_text)


@pytest_twisted.ensureDeferred
async def test_replays_write_no_duplicate_rows(db):
    engine, s, _ = db
    w = writer(db, batch_interval=0.01)
    msgs = [(perf(), "p1"), (event(), "e1"), (alarm(), "a1"), (alarm(TS + 5, "cleared"), "a2"),
            (Notification(ts=TS, source="centaure-alerter@n1", ref=MAX_REF, channel="email",
                          recipient="noc@example.net", state="sent", attempts=1), "n1")]
    for _ in range(2):  # the second round is a replay in a later batch
        await defer.gatherResults([w.handle(m, dl(mid)) for m, mid in msgs])
    # and a replay by a fresh process, everything in one batch, twice over
    w2 = writer(db, batch_interval=0.01)
    await defer.gatherResults([w2.handle(m, dl(mid)) for m, mid in msgs * 2])
    assert count(engine, s.samples) == 42 and count(engine, s.samples_text) == 8
    assert count(engine, s.series) == 50
    assert count(engine, s.devices) == 1
    assert count(engine, s.metrics) == 18  # 10 gauge names + 8 text ones
    assert count(engine, s.events) == 1
    assert count(engine, s.alarm_history) == 2
    assert count(engine, s.notifications) == 1
    with engine.connect() as c:
        row = c.execute(sa.select(s.alarms)).one()
        hist = c.execute(sa.select(s.alarm_history.c.ref).distinct()).scalars().all()
        nref = c.execute(sa.select(s.notifications.c.ref)).scalar_one()
    # the 2**64-1 ref is stored and read back exactly
    assert row.ref == MAX_REF and row.cause_ref == MAX_REF - 1 and row.state == "cleared"
    assert hist == [MAX_REF] and nref == MAX_REF
    with engine.connect() as c:
        by_ref = c.execute(sa.select(s.alarms.c.state).where(s.alarms.c.ref == MAX_REF)).scalar()
    assert by_ref == "cleared"


@pytest_twisted.ensureDeferred
async def test_batch_of_10000_samples(db):
    engine, s, _ = db
    w = writer(db, batch_size=10_000, batch_interval=5)
    ds = [w.handle(perf(host=f"dev{i:03d}.example.net"), dl(f"p{i}")) for i in range(200)]
    await defer.gatherResults(ds)
    assert w.counters.get("batches") == 1
    assert count_samples(engine, s) == 10_000 and count(engine, s.devices) == 200
    assert w.rows_written[s.samples.name] == 200 * 42
    assert w.rows_written[s.samples_text.name] == 200 * 8
    # the same 10,000 again: nothing new
    await defer.gatherResults([w.handle(perf(host=f"dev{i:03d}.example.net"), dl(f"p{i}"))
                               for i in range(200)])
    assert count_samples(engine, s) == 10_000


@pytest_twisted.ensureDeferred
async def test_keys_are_exact_on_every_dialect(db):
    engine, s, _ = db
    w = writer(db, batch_interval=0.01)
    # Case and trailing spaces make distinct devices (MariaDB collations would merge them).
    await defer.gatherResults([w.handle(perf(host=h, n=3), dl(h)) for h in ("R1", "r1")])
    assert count(engine, s.devices) == 2 and count_samples(engine, s) == 6
