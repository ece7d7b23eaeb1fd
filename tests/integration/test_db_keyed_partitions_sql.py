"""Events, alarm history, thresholds and notifications in time partitions (revision 0004).

On the real MariaDB and PostgreSQL (SQLite too where it has something to
say: it keeps one table). Each test migrates a fresh table prefix and drops
its tables afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import pytest_twisted
import sqlalchemy as sa
from alembic import command
from twisted.internet import defer, reactor, threads

from connector.consumer import Delivery
from connector.messages import Alarm, Event, Notification, Threshold, ThresholdValue, Varbind
from connector_db import migrate, partitions
from connector_db.maintain import Retention, ensure_partitions, maintain
from connector_db.store import NormalizedStore
from connector_db.writer import SqlWriter
from centaure_shared.storage.schema import Schema, make_schema
from tests.conftest import SQL_URLS
from tests.integration.test_db_retention_sql import assert_in_place, rows_by_partition
from tests.unit.test_db_migrate import prefixed_engine

pytestmark = pytest.mark.integration

DAY = 86_400_000
HOUR = 3_600_000
#: The last UTC midnight (the migration makes partitions around the real clock).
MIDNIGHT = int(time.time() * 1000) // DAY * DAY
KEYED = ("events", "alarm_history", "thresholds", "notifications")
#: The tables of keyed messages in time partitions; events are not (one id, two receipt times).
PARTITIONED = ("alarm_history", "thresholds", "notifications")


def _url(name: str, tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'centaure.sqlite3'}" if name == "sqlite" else SQL_URLS[name]


@contextmanager
def at_0003(url: str) -> Iterator[tuple[sa.Engine, Schema]]:
    """(engine, schema) of a fresh prefix at revision 0003, the one before these partitions."""
    with prefixed_engine(url) as (engine, p):
        with engine.connect() as c:
            command.upgrade(migrate._config(p, c), "0003")
            c.commit()
        yield engine, make_schema(p)


@pytest.fixture(params=sorted(SQL_URLS) + ["sqlite"])
def db03(request, tmp_path):
    """At revision 0003 on MariaDB, PostgreSQL and SQLite."""
    with at_0003(_url(request.param, tmp_path)) as db:
        yield db


@pytest.fixture(params=sorted(SQL_URLS))
def sql03(request):
    """At revision 0003 on MariaDB and PostgreSQL (SQLite is never partitioned)."""
    with at_0003(SQL_URLS[request.param]) as db:
        yield db


@pytest.fixture(params=sorted(SQL_URLS))
def db(request):
    """(engine, schema) of a fresh prefix at head, on MariaDB and PostgreSQL."""
    with prefixed_engine(SQL_URLS[request.param]) as (engine, p):
        assert migrate.upgrade(engine, p) == migrate.head()
        yield engine, make_schema(p)


def row(table: str, i: int, ts: int) -> dict:
    """A row of ``table`` (message id ``m<i>``), every column set."""
    mid = f"m{i}"
    if table == "events":
        return {"message_id": mid, "ts": ts, "host": f"r{i % 3}", "address": "10.0.0.1",
                "snmp_version": "v2c", "trap_oid": "1.3.6.1.6.3.1.1.5.3", "name": "linkDown",
                "severity": "major", "action": "raise", "alarm": "linkDown", "key": str(i),
                "message": f"link {i} down", "varbinds": "[]", "unknown_sender": i % 2 == 0}
    if table == "alarm_history":
        return {"message_id": mid, "ref": 2**64 - 1 - i, "host": f"r{i % 3}", "name": "linkDown",
                "severity": "major", "state": "raised", "message": "m", "first_seen": ts,
                "last_seen": ts, "cleared_at": None, "count": i + 1, "origin": "trap",
                "acked_by": None, "flapping": False, "cause_ref": None, "ts": ts}
    if table == "thresholds":
        return {"message_id": mid, "ts": ts, "host": f"r{i % 3}", "rule": "cpu",
                "state": "breached", "values": "[]"}
    return {"message_id": mid, "ts": ts, "ref": i, "rule": "mail-ops", "host": f"r{i % 3}",
            "channel": "email", "recipient": "ops@example.net", "state": "sent", "attempts": 1,
            "reason": None}


def fill(engine, schema, times_ms: list[int], first: int = 0) -> None:
    """A row per time in each table, message ids from ``m<first>`` on."""
    with engine.begin() as c:
        for name in KEYED:
            c.execute(sa.insert(getattr(schema, name)),
                      [row(name, first + i, ts) for i, ts in enumerate(times_ms)])


def snapshot(engine, schema) -> dict[str, list[tuple]]:
    """Every row of the four tables, every column, by id."""
    with engine.connect() as c:
        return {name: c.execute(sa.select(t).order_by(t.c.id)).all()
                for name in KEYED for t in [getattr(schema, name)]}


def keys(engine, table: str) -> tuple[tuple, list]:
    """(primary key columns, unique keys' columns) as the database reports them."""
    with engine.connect() as c:
        insp = sa.inspect(c)
        return (tuple(insp.get_pk_constraint(table)["constrained_columns"]),
                sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)))


def partitioned(engine, table: str) -> bool:
    with engine.connect() as c:
        return partitions.is_partitioned(c, table)


def test_migration_keeps_every_row_and_id_and_downgrade_too(db03):
    engine, schema = db03
    sqlite = engine.dialect.name == "sqlite"
    # 40 days of rows, older ones and one in the future.
    times = [MIDNIGHT - 40 * DAY + i * 7 * HOUR for i in range(140)]
    times += [MIDNIGHT - 200 * DAY, MIDNIGHT - 1000 * DAY, MIDNIGHT + 30 * DAY]
    fill(engine, schema, times)
    before = snapshot(engine, schema)
    assert all(len(rows) == len(times) for rows in before.values())

    assert migrate.upgrade(engine, schema.prefix) == migrate.head()
    assert snapshot(engine, schema) == before
    assert not partitioned(engine, schema.events.name)
    assert keys(engine, schema.events.name) == (("id",), [("message_id",)])
    for name in PARTITIONED:
        table = getattr(schema, name).name
        if sqlite:
            assert not partitioned(engine, table)
            assert keys(engine, table) == (("id",), [("message_id", "ts")])
            continue
        assert partitioned(engine, table), name
        assert keys(engine, table) == (("id", "ts"), [("message_id", "ts")])
        with engine.connect() as c:
            parts = partitions.partitions(c, table)
        # A day each for the last 31 days to 3 days ahead, 30 days each before (24 at most,
        # the first taking every older row), and a catch-all.
        bounded = [p for p in parts if not p.catch_all]
        assert parts[-1].catch_all and bounded[0].lower is None, name
        daily = MIDNIGHT - 31 * DAY
        assert [p.upper - p.lower for p in bounded[1:] if p.upper <= daily] == [30 * DAY] * 23
        assert [p.upper - p.lower for p in bounded if p.lower is not None and p.lower >= daily
                ] == [DAY] * (len(bounded) - 24)
        assert bounded[-1].upper > int(time.time() * 1000) + 3 * DAY
        assert_in_place(engine, table)
    # New rows get new ids: the counters go on from the copied rows.
    fill(engine, schema, [MIDNIGHT + HOUR], first=len(times))
    after = snapshot(engine, schema)
    for name in KEYED:
        assert after[name][:-1] == before[name]
        assert after[name][-1].id > before[name][-1].id
        assert after[name][-1].message_id == f"m{len(times)}"

    with engine.connect() as c:
        command.downgrade(migrate._config(schema.prefix, c), "0003")
        c.commit()
    assert snapshot(engine, schema) == after
    for name in KEYED:
        table = getattr(schema, name).name
        assert not partitioned(engine, table)
        assert keys(engine, table) == (("id",), [("message_id",)])


def dl(mid: str | None) -> Delivery:
    return Delivery(body=b"", exchange="x", routing_key="k", message_id=mid)


def messages(ts: float) -> list:
    """One message of each keyed kind at ``ts`` (seconds)."""
    return [
        Event(ts=ts, source="centaure-traps@n1", host="r1", address="10.0.0.1",
              snmp_version="v2c", trap_oid="1.3.6.1.6.3.1.1.5.3", name="linkDown",
              severity="major", varbinds=[Varbind(oid="1.3.6.1.2.1.2.2.1.1.3", type="Integer",
                                                  value=3)],
              message="link 3 down", action="raise", alarm="linkDown", key="3"),
        Alarm(ts=ts, source="centaure-correlator@n1", host="r1", ref=7, name="linkDown",
              severity="major", state="raised", message="link 3 down", first_seen=ts,
              last_seen=ts, count=1, origin="trap"),
        Threshold(ts=ts, source="centaure-alerter@n1", host="r1", rule="cpu", state="breached",
                  values=[ThresholdValue(metric="cpu", value=97.0)]),
        Notification(ts=ts, source="centaure-alerter@n1", ref=7, channel="email",
                     recipient="ops@example.net", state="sent", attempts=1, host="r1"),
    ]


def counts(engine, schema) -> dict[str, int]:
    with engine.connect() as c:
        return {name: c.execute(sa.select(sa.func.count()).select_from(
            getattr(schema, name))).scalar_one() for name in KEYED}


def test_a_replayed_message_inserts_nothing(db03):
    """Re-delivered (same AMQP message id) or replayed without one (same body): no new row,
    on either side of a midnight, in the partitioned tables."""
    engine, schema = db03
    migrate.upgrade(engine, schema.prefix)
    store = NormalizedStore(engine, schema)
    boundary = MIDNIGHT + DAY
    times = [(boundary - 1) / 1000, boundary / 1000]  # 23:59:59.999 and 00:00 the next day

    def write(mid_prefix: str | None) -> None:
        store.write([store.prepare(m, dl(None if mid_prefix is None else f"{mid_prefix}{i}-{t}"))
                     for t in times for i, m in enumerate(messages(t))])

    write("a")
    write(None)  # no AMQP id: keyed by a hash of the body
    assert counts(engine, schema) == {name: 4 for name in KEYED}
    for _ in range(2):
        write("a")
        write(None)
    assert counts(engine, schema) == {name: 4 for name in KEYED}
    # The key is the message, not its content: another message id is another row.
    write("b")
    assert counts(engine, schema) == {name: 6 for name in KEYED}
    if engine.dialect.name != "sqlite":
        for name in PARTITIONED:
            table = getattr(schema, name).name
            by_part = rows_by_partition(engine, table)
            for ts in (boundary - 1, boundary):
                part = partitions.partition_name(table, ts // DAY * DAY, engine.dialect.name)
                assert by_part[part].count(ts) == 3, (name, part)


def test_the_same_trap_from_two_receivers_is_one_event(db03):
    """Two trap receivers publish the same trap under one message id, each with its own
    receipt time: one row in events (which is why events are not partitioned)."""
    engine, schema = db03
    migrate.upgrade(engine, schema.prefix)
    store = NormalizedStore(engine, schema)
    received = [MIDNIGHT / 1000 - 0.004, MIDNIGHT / 1000 + 0.003]  # across a midnight too
    store.write([store.prepare(messages(ts)[0], dl("trap:0123456789abcdef")) for ts in received])
    store.write([store.prepare(messages(received[1])[0], dl("trap:0123456789abcdef"))])
    assert times_of(engine, schema.events) == [MIDNIGHT - 4]


def retention(**kw) -> Retention:
    return Retention(**{"lock_timeout": 30.0, **kw})


#: How long each table keeps its rows in the tests (days): all different.
KEEP = {"events": 90, "alarm_history": 365, "thresholds": 30, "notifications": 200}


def times_of(engine, table: sa.Table) -> list[int]:
    with engine.connect() as c:
        return c.execute(sa.select(table.c.ts).order_by(table.c.ts)).scalars().all()


def test_maintain_drops_each_tables_old_partitions_once(sql03):
    """Each table's partitions past its own retention go whole; every row within it is kept;
    a second pass finds nothing to do (SQLite's batched deletes: tests/unit/test_db_maintain.py)."""
    engine, schema = sql03
    now = MIDNIGHT + 12 * HOUR
    times = [MIDNIGHT - d * DAY + HOUR for d in range(400)]  # 01:00 of the last 400 days
    fill(engine, schema, times)
    migrate.upgrade(engine, schema.prefix)
    with engine.connect() as c:
        before = {name: partitions.partitions(c, getattr(schema, name).name)
                  for name in PARTITIONED}
    keep = retention(delete_batch=100, **{n: d * 86400.0 for n, d in KEEP.items()})
    report = maintain(engine, schema, keep, now=now / 1000)
    # Events, not partitioned: the rows past their retention deleted in batches.
    cutoff = now - KEEP["events"] * DAY
    assert times_of(engine, schema.events) == sorted(t for t in times if t >= cutoff)
    assert report.deleted[schema.events.name] == sum(1 for t in times if t < cutoff)
    for name in PARTITIONED:
        table = getattr(schema, name)
        cutoff = now - KEEP[name] * DAY
        old = [p.name for p in before[name] if p.upper is not None and p.upper <= cutoff]
        assert old and report.dropped_from[table.name] == old, name
        # The partition holding the cutoff stays whole: rows from its lower bound on are kept.
        holder = next(p for p in before[name] if not p.catch_all and cutoff < p.upper)
        assert times_of(engine, table) == sorted(
            t for t in times if holder.lower is None or t >= holder.lower), name
        assert min(times_of(engine, table)) <= cutoff < min(t for t in times if t > cutoff)
        assert table.name not in report.deleted  # dropped, not deleted row by row
        assert_in_place(engine, table.name)
    snapshot_after = snapshot(engine, schema)
    again = maintain(engine, schema, keep, now=now / 1000)
    assert again.created == [] and again.dropped == []
    assert all(again.dropped_from[getattr(schema, n).name] == [] for n in PARTITIONED)
    assert again.deleted[schema.events.name] == 0
    assert snapshot(engine, schema) == snapshot_after


def test_writer_check_makes_every_tables_partitions_ahead(db):
    engine, schema = db
    now = time.time()
    made = ensure_partitions(engine, schema, retention(partitions_ahead=10 * 86400.0), now=now)
    for name in ("samples", *PARTITIONED):
        table = getattr(schema, name).name
        assert any(m.endswith(f" of {table}") for m in made), (name, made)
        with engine.connect() as c:
            last = [p for p in partitions.partitions(c, table) if not p.catch_all][-1]
        assert last.upper > now * 1000 + 10 * DAY
    assert ensure_partitions(engine, schema, retention(partitions_ahead=10 * 86400.0),
                             now=now) == []


@pytest_twisted.ensureDeferred
async def test_writer_across_midnight_while_maintain_drops(sql03):
    """Threshold crossings written (and re-delivered) across midnight while passes drop old
    partitions: every one kept once, in the partition of its day."""
    engine, schema = sql03
    fill(engine, schema, [MIDNIGHT - d * DAY for d in range(95, 101)])  # past 90 days
    migrate.upgrade(engine, schema.prefix)
    table = schema.thresholds.name
    writer = SqlWriter(NormalizedStore(engine, schema), reactor, batch_interval=0.005,
                       batch_size=50)
    done = threading.Event()
    passes = []

    def maintaining():
        while True:
            passes.append(maintain(engine, schema, retention(), now=MIDNIGHT / 1000))
            if done.is_set():
                return

    running = threads.deferToThread(maintaining)
    sent = []
    try:
        for second in range(-60, 60):  # a crossing per second and host across midnight
            ts = (MIDNIGHT + second * 1000) / 1000
            for host in ("r1", "r2"):
                crossing = messages(ts)[2]
                crossing = type(crossing)(**{**{f: getattr(crossing, f)
                                                for f in crossing.__struct_fields__},
                                             "host": host})
                for _ in range(2):  # delivered twice
                    sent.append(writer.handle(crossing, dl(f"{host}{second}")))
            if second % 10 == 0:
                await defer.gatherResults(sent)
    finally:
        await defer.gatherResults(sent)
        done.set()
        await running
        writer.stop_pool()
    assert passes and passes[0].dropped_from[table]
    assert all(not p.dropped_from[table] for p in passes[1:])
    times = [t for t in times_of(engine, schema.thresholds) if t >= MIDNIGHT - 60_000]
    assert times == sorted(MIDNIGHT + s * 1000 for s in range(-60, 60) for _ in range(2))
    by_part = rows_by_partition(engine, table)
    before = partitions.partition_name(table, MIDNIGHT - DAY, engine.dialect.name)
    after = partitions.partition_name(table, MIDNIGHT, engine.dialect.name)
    assert len(by_part[before]) == 60 * 2 and len(by_part[after]) == 60 * 2
    assert min(times_of(engine, schema.thresholds)) >= MIDNIGHT - 91 * DAY
