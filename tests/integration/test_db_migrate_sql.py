"""The Alembic migrations against the real MariaDB and PostgreSQL of this machine.

Each test works under a unique table prefix in database ``test`` and drops
every table it made (the prefixed version table too) afterwards.
"""

from __future__ import annotations


import pytest
import pytest_twisted
import sqlalchemy as sa
from alembic import command
from twisted.internet import defer, reactor

from connector.consumer import Delivery
from connector.messages import Metric, Perf
from connector_db import migrate
from centaure_shared.storage.schema import make_schema
from connector_db.store import NormalizedStore
from connector_db.writer import SqlWriter
from tests.unit.test_db_migrate import (Statements, assert_same_as_create_all,
                                        migrated_columns_on_mariadb, prefixed_engine,
                                        run_concurrent_upgrades, schema_diffs, tables)

from tests.conftest import SQL_URLS

pytestmark = pytest.mark.integration

URLS = SQL_URLS


@pytest.fixture(params=sorted(URLS))
def db(request):
    """An engine on one real database and a fresh prefix; its tables dropped afterwards."""
    with prefixed_engine(URLS[request.param]) as db:
        yield db


def test_migrated_schema_is_make_schema(db):
    engine, p = db
    assert migrate.current(engine, p) is None
    assert migrate.upgrade(engine, p) == migrate.head() == "0005"
    assert tables(engine, p) == set(make_schema(p).metadata.tables) | {f"{p}alembic_version"}
    assert schema_diffs(engine, p) == []
    # What autogenerate leaves out (MariaDB's UNSIGNED and key collations,
    # PostgreSQL's sequences) is the same as create_all's too.
    assert_same_as_create_all(engine, p)


def test_key_columns_are_binary_and_refs_unsigned_on_mariadb():
    p, cols = migrated_columns_on_mariadb(URLS["mariadb"], migrate.upgrade)
    for table, column in (("devices", "name"), ("metrics", "name"), ("series", "idx"),
                          ("events", "message_id"), ("notifications", "message_id")):
        assert cols[(f"{p}{table}", column)][0] == "utf8mb4_nopad_bin", (table, column)
    for table, column in (("alarms", "ref"), ("alarm_history", "ref"),
                          ("alarm_history", "cause_ref"), ("notifications", "ref")):
        assert cols[(f"{p}{table}", column)][1] == "bigint(20) unsigned", (table, column)


def test_upgrade_is_idempotent(db):
    engine, p = db
    with pytest.raises(migrate.SchemaOutOfDate):
        migrate.check(engine, p)
    migrate.upgrade(engine, p)
    with Statements(engine) as sql:
        assert migrate.upgrade(engine, p) == "0005"
    assert sql.seen and sql.writes() == []
    assert migrate.current(engine, p) == "0005"
    migrate.check(engine, p)
    with engine.connect() as c:
        assert c.execute(sa.text(f"SELECT version_num FROM {p}alembic_version")).all() == [
            ("0005",)]


def test_processes_upgrading_at_once(db):
    engine, p = db
    assert run_concurrent_upgrades(engine.url.render_as_string(hide_password=False), p) == ["0005"] * 4
    assert schema_diffs(engine, p) == []
    with engine.connect() as c:
        assert c.execute(sa.text(f"SELECT version_num FROM {p}alembic_version")).all() == [
            ("0005",)]


def test_downgrade_drops_the_tables(db):
    engine, p = db
    migrate.upgrade(engine, p)
    with engine.connect() as c:
        command.downgrade(migrate._config(p, c), "base")
        c.commit()
    assert tables(engine, p) == {f"{p}alembic_version"}
    assert migrate.current(engine, p) is None
    migrate.upgrade(engine, p)
    assert schema_diffs(engine, p) == []


def perf(n=30) -> Perf:
    return Perf(ts=1_700_000_000.125, source="centaure-snmp@n1", host="r1.example.net",
                address="10.0.0.1", device_type="router",
                metrics=[Metric(name=f"m{i}", index="" if i % 3 else str(i),
                                value=float(i) if i % 5 else f"text {i}",
                                kind="gauge" if i % 5 else "text", oid=f"1.3.6.1.4.1.9.{i}")
                         for i in range(n)])


@pytest_twisted.ensureDeferred
async def test_writer_on_a_migrated_schema(db):
    engine, p = db
    migrate.upgrade(engine, p)
    schema = make_schema(p)
    w = SqlWriter(NormalizedStore(engine, schema), reactor, batch_interval=0.01)
    try:
        for mid in ("p1", "p2"):  # the second is a replay (another message id, same samples)
            await defer.gatherResults([
                w.handle(perf(), Delivery(body=b"", exchange="x", routing_key="k", message_id=mid))])
    finally:
        w.stop_pool()
    with engine.connect() as c:
        def count(t):
            return c.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()

        assert count(schema.samples) == 24 and count(schema.samples_text) == 6  # 6 texts
        assert count(schema.series) == 30
        assert count(schema.metrics) == 30
        assert count(schema.devices) == 1
