"""Time partitions of samples and ``centaure db maintain`` on the real MariaDB and PostgreSQL.

Each test migrates a fresh table prefix in database ``test`` and drops its
tables afterwards (PostgreSQL partitions go with their table).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import pytest_twisted
import sqlalchemy as sa
from alembic import command
from twisted.internet import defer, reactor, threads

from connector.consumer import Delivery
from connector.messages import Metric, Perf
from connector_db import migrate, partitions
from connector_db.maintain import (MaintainLockTimeout, Retention, ensure_partitions, maintain,
                                   maintenance_lock)
from connector_db.store import NormalizedStore
from connector_db.writer import SqlWriter
from centaure_shared.storage.schema import make_schema
from tests.conftest import SQL_URLS
from tests.sql_samples import insert_samples
from tests.unit.test_db_migrate import prefixed_engine

pytestmark = pytest.mark.integration

DAY = 86_400_000
#: The last UTC midnight (the migration makes partitions around the real clock).
MIDNIGHT = int(time.time() * 1000) // DAY * DAY
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(params=sorted(SQL_URLS))
def db(request):
    """(engine, schema) of a fresh prefix at revision 0001: the tests upgrade it."""
    with prefixed_engine(SQL_URLS[request.param]) as (engine, p):
        with engine.connect() as c:
            command.upgrade(migrate._config(p, c), "0001")
            c.commit()
        yield engine, make_schema(p)


def upgrade(engine, schema) -> None:
    assert migrate.upgrade(engine, schema.prefix) == migrate.head()


def add_samples(engine, schema, times_ms, devices=2, metrics=3) -> int:
    """Rows for every device, metric and time; how many."""
    rows = [{"device_id": d, "metric_id": m, "idx": str(m), "ts": ts,
             "value_num": float(ts % 1000 + m), "value_text": None}
            for ts in times_ms for d in range(1, devices + 1) for m in range(1, metrics + 1)]
    with engine.begin() as c:
        if sa.inspect(c).has_table(schema.series.name):
            insert_samples(c, schema, rows)
        else:  # the layout before revision 0005
            wide = sa.table(schema.samples.name, *(sa.column(k) for k in rows[0]))
            c.execute(sa.insert(wide), rows)
    return len(rows)


def add_events(engine, schema, times_ms) -> None:
    with engine.begin() as c:
        c.execute(sa.insert(schema.events), [
            {"message_id": f"e{i}", "ts": ts, "host": "r1", "address": "10.0.0.1",
             "snmp_version": "v2c", "trap_oid": "1.3", "name": "linkDown", "severity": "major",
             "action": "raise", "alarm": None, "key": "", "message": "m", "varbinds": "[]",
             "unknown_sender": False} for i, ts in enumerate(times_ms)])


def sample_times(engine, schema) -> list[int]:
    t = sa.table(schema.samples.name, sa.column("ts"))  # in every layout
    with engine.connect() as c:
        return c.execute(sa.select(t.c.ts).order_by(t.c.ts)).scalars().all()


def rows_by_partition(engine, table) -> dict[str, list[int]]:
    """Each partition's ts values, read from the partition itself."""
    out = {}
    with engine.connect() as c:
        for p in partitions.partitions(c, table):
            if c.dialect.name == "postgresql":
                sql = f'SELECT ts FROM "{p.name}" ORDER BY ts'
            else:
                sql = f"SELECT ts FROM `{table}` PARTITION (`{p.name}`) ORDER BY ts"
            out[p.name] = list(c.exec_driver_sql(sql).scalars())
    return out


def assert_in_place(engine, table) -> None:
    """Every row sits in the partition whose range holds it (the catch-all: beyond them)."""
    with engine.connect() as c:
        parts = partitions.partitions(c, table)
    by_part = rows_by_partition(engine, table)
    bounded = [p for p in parts if not p.catch_all]
    for p in bounded:
        for ts in by_part[p.name]:
            assert (p.lower is None or ts >= p.lower) and ts < p.upper, (p, ts)
    for p in parts:
        if p.catch_all:
            for ts in by_part[p.name]:
                assert ts >= bounded[-1].upper or (
                    bounded[0].lower is not None and ts < bounded[0].lower), (p, ts)


def retention(**kw) -> Retention:
    return Retention(**{"lock_timeout": 30.0, **kw})


def test_migration_keeps_every_row_and_downgrade_too(db):
    engine, schema = db
    now = MIDNIGHT + 5 * DAY
    # 40 days of rows, some far older (the first partition takes them) and one in the future.
    times = [MIDNIGHT - 40 * DAY + i * 3_600_000 * 7 for i in range(150)]
    times += [MIDNIGHT - 4000 * DAY, now + 30 * DAY]
    n = add_samples(engine, schema, times)
    before = sample_times(engine, schema)
    with engine.connect() as c:
        assert not partitions.is_partitioned(c, schema.samples.name)
    upgrade(engine, schema)
    with engine.connect() as c:
        assert partitions.is_partitioned(c, schema.samples.name)
        parts = partitions.partitions(c, schema.samples.name)
    assert len(parts) >= 40 and parts[-1].catch_all
    assert sample_times(engine, schema) == before and len(before) == n
    assert_in_place(engine, schema.samples.name)
    with engine.connect() as c:
        command.downgrade(migrate._config(schema.prefix, c), "0001")
        c.commit()
        assert not partitions.is_partitioned(c, schema.samples.name)
    assert sample_times(engine, schema) == before


def test_day_boundary_and_a_clock_ahead(db):
    """Rows at the last ms of a day, at midnight, minutes and days ahead: none lost or misplaced."""
    engine, schema = db
    upgrade(engine, schema)
    # A midnight ahead of the partitions the migration made from the real clock.
    BASE = MIDNIGHT + 10 * DAY
    table = schema.samples.name
    # A clock at 23:59:59.900 the day before BASE: partitions made 3 days ahead.
    now = BASE - 100
    report = maintain(engine, schema, retention(), now=now / 1000)
    assert report.dropped == []
    with engine.connect() as c:
        parts = partitions.partitions(c, table)
    assert [p for p in parts if p.upper is not None][-1].upper > now + 3 * DAY
    times = [BASE - 1, BASE, BASE + 1, BASE + 5 * 60_000,  # clock 5 min ahead
             BASE + 3 * DAY + 1, BASE + 40 * DAY]  # beyond the partitions: catch-all
    n = add_samples(engine, schema, times)
    assert len(sample_times(engine, schema)) == n
    by_part = rows_by_partition(engine, table)
    name = {ts: partitions.partition_name(table, (ts // DAY) * DAY, engine.dialect.name)
            for ts in times}
    assert BASE - 1 in by_part[name[BASE - 1]]
    assert BASE in by_part[name[BASE]] and name[BASE] != name[BASE - 1]
    assert_in_place(engine, table)
    # Later, partitions are made over the rows the catch-all took: they move in, none lost.
    report = maintain(engine, schema, retention(samples=365 * 86400.0),
                      now=(BASE + 38 * DAY) / 1000)
    assert report.created and report.dropped == []
    assert len(sample_times(engine, schema)) == n
    by_part = rows_by_partition(engine, table)
    far = BASE + 40 * DAY
    assert far in by_part[partitions.partition_name(table, far, engine.dialect.name)]
    assert_in_place(engine, table)


def test_maintain_drops_old_partitions_and_rows_once(db):
    engine, schema = db
    now = MIDNIGHT + 12 * 3_600_000
    times = [MIDNIGHT - d * DAY + 3_600_000 for d in range(20)]  # 01:00 of the last 20 days
    add_samples(engine, schema, times)
    add_events(engine, schema, [now - d * DAY for d in range(0, 200, 10)])
    upgrade(engine, schema)
    keep = retention(samples=14 * 86400.0, events=90 * 86400.0, delete_batch=100)
    report = maintain(engine, schema, keep, now=now / 1000)
    cutoff = now - 14 * DAY
    # Whole days older than 14 days went; the partition holding the cutoff stays.
    kept = sample_times(engine, schema)
    assert min(kept) >= (cutoff // DAY) * DAY
    assert sorted(set(kept)) == [t for t in times if t >= (cutoff // DAY) * DAY][::-1]
    assert len(report.dropped_from[schema.samples.name]) == 20 - 15
    # Events are not partitioned (one trap, one id, two receivers' times): the rows older
    # than 90 days deleted in batches, every row within kept.
    assert report.deleted[schema.events.name] == 10
    with engine.connect() as c:
        events = c.execute(sa.select(schema.events.c.ts)).scalars().all()
    assert sorted(events) == [now - d * DAY for d in range(90, -1, -10)]
    again = maintain(engine, schema, keep, now=now / 1000)
    assert again.created == [] and again.dropped == []
    assert set(again.deleted.values()) == {0}
    assert sample_times(engine, schema) == kept


def test_lock_held_by_another_pass(db):
    """A second pass waits at most lock_timeout and says which lock; the writer's check skips."""
    engine, schema = db
    upgrade(engine, schema)
    with maintenance_lock(engine, schema.prefix, 5) as taken:
        assert taken
        with pytest.raises(MaintainLockTimeout, match="centaure-maintain:" + schema.prefix):
            maintain(engine, schema, retention(lock_timeout=1.0))
        assert ensure_partitions(engine, schema, retention()) is None
    assert ensure_partitions(engine, schema, retention()) == []


def centaure(tmp_path, url, prefix, *args) -> subprocess.CompletedProcess:
    ini = tmp_path / "settings.ini"
    ini.write_text(f"[database]\nurl = {url}\n[db]\ntable_prefix = {prefix}\n"
                   "[retention]\nsamples = 14d\nlock_timeout = 60s\n")
    return subprocess.Popen([sys.executable, "-m", "centaure.cli", *args, "-c", str(ini)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)


def test_two_maintain_commands_at_once(db, tmp_path):
    engine, schema = db
    now = MIDNIGHT  # the rows are old for the real clock: maintain drops them
    add_samples(engine, schema, [now - d * DAY for d in range(30)])
    add_events(engine, schema, [now - d * DAY for d in range(400)])
    upgrade(engine, schema)
    url = engine.url.render_as_string(hide_password=False)
    procs = [centaure(tmp_path, url, schema.prefix, "db", "maintain") for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "done in" in out and err == ""
    dropped = [line for out, _ in outs for line in out.splitlines()
               if "partitions older than 14d dropped" in line]
    # One pass dropped them, the other found nothing left.
    assert sorted(line.endswith(": none") for line in dropped) == [False, True]
    with engine.connect() as c:
        # 90 days of events kept (the run's clock is past MIDNIGHT, before the next one),
        # the older ones deleted in batches.
        ts = schema.events.c.ts
        assert c.execute(sa.select(sa.func.count()).where(ts > MIDNIGHT - 90 * DAY)).scalar() == 90
        assert c.execute(sa.select(sa.func.count()).where(ts < MIDNIGHT - 91 * DAY)).scalar() == 0
    assert_in_place(engine, schema.samples.name)


def test_maintain_command_errors(tmp_path, db):
    engine, schema = db  # at 0001: the command asks for an upgrade first
    url = engine.url.render_as_string(hide_password=False)
    p = centaure(tmp_path, url, schema.prefix, "db", "maintain")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1 and out == ""
    assert err.startswith("centaure db maintain: the database schema is at revision 0001")
    assert "centaure db upgrade -c" in err


def perf(ts: float, host: str) -> Perf:
    return Perf(ts=ts, source="centaure-snmp@n1", host=host, address="10.0.0.1",
                device_type="router",
                metrics=[Metric(name=f"m{i}", index=str(i), value=float(i), kind="gauge",
                                oid=f"1.3.6.1.4.1.9.{i}") for i in range(10)])


@pytest_twisted.ensureDeferred
async def test_writer_across_a_boundary_while_maintain_drops(db):
    """A steady stream across midnight, and old partitions dropped meanwhile: every row kept."""
    engine, schema = db
    old = [MIDNIGHT - d * DAY for d in range(15, 25)]
    add_samples(engine, schema, old)
    upgrade(engine, schema)
    writer = SqlWriter(NormalizedStore(engine, schema), reactor, batch_interval=0.005,
                       batch_size=200)
    done = threading.Event()
    passes = []

    def maintaining():
        # Dropping the old days again and again while the writer writes.
        while True:
            passes.append(maintain(engine, schema, retention(), now=MIDNIGHT / 1000))
            if done.is_set():
                return

    running = threads.deferToThread(maintaining)
    sent = []
    try:
        for second in range(-60, 60):  # a poll per second across midnight
            ts = (MIDNIGHT + second * 1000) / 1000
            for host in ("r1", "r2"):
                sent.append(writer.handle(perf(ts, host), Delivery(
                    body=b"", exchange="x", routing_key="k", message_id=f"{host}{second}")))
            if second % 10 == 0:
                await defer.gatherResults(sent)
    finally:
        await defer.gatherResults(sent)
        done.set()
        await running
        writer.stop_pool()
    assert passes and passes[0].dropped and all(not p.dropped for p in passes[1:])
    times = [t for t in sample_times(engine, schema) if t >= MIDNIGHT - 60_000]
    assert len(times) == 120 * 2 * 10
    assert sorted(set(times)) == [MIDNIGHT + s * 1000 for s in range(-60, 60)]
    by_part = rows_by_partition(engine, schema.samples.name)
    before = partitions.partition_name(schema.samples.name, MIDNIGHT - DAY, engine.dialect.name)
    after = partitions.partition_name(schema.samples.name, MIDNIGHT, engine.dialect.name)
    assert len([t for t in by_part[before] if t >= MIDNIGHT - 60_000]) == 60 * 2 * 10
    assert len(by_part[after]) == 60 * 2 * 10
    assert min(sample_times(engine, schema)) >= MIDNIGHT - 14 * DAY
