"""The per_device writer touches only its own tables or listed ones, and a bounded number.

Issue 18, finding 5: a perf message's metric and host are whatever its
publisher wrote; ``alarm`` on host ``history`` fills the template in as
``alarm_history``. On the real MariaDB of this machine (database ``test``),
every table of a test under a unique prefix, all dropped afterwards.
"""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor

from connector.consumer import Delivery, RejectedMessage
from connector.messages import Metric, Perf
from connector_db.per_device import PerDeviceStore
from connector_db.settings import DbSettings
from connector_db.writer import SqlWriter

from tests.conftest import MARIADB_URL

pytestmark = pytest.mark.integration

TS = 1_700_000_000.0
LEGACY = DbSettings().table_struct


class Db:
    def __init__(self) -> None:
        self.engine = sa.create_engine(MARIADB_URL)
        self.prefix = f"t{uuid.uuid4().hex[:10]}_"
        self.writers: list[SqlWriter] = []

    def writer(self, **kw) -> SqlWriter:
        store = PerDeviceStore(self.engine, LEGACY, self.prefix + "{metric}_{device}",
                               {"r1.example.net": "42"},
                               registry_table=self.prefix + "per_device_registry", **kw)
        w = SqlWriter(store, reactor, batch_interval=0.02)
        self.writers.append(w)
        return w

    def tables(self) -> set[str]:
        with self.engine.connect() as c:
            return {n for n in sa.inspect(c).get_table_names()
                    if n.lower().startswith(self.prefix)}

    def columns(self, name: str) -> list[str]:
        with self.engine.connect() as c:
            return [col["name"] for col in sa.inspect(c).get_columns(name)]

    def count(self, name: str) -> int:
        with self.engine.connect() as c:
            return c.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar()


@pytest.fixture
def db():
    d = Db()
    try:
        yield d
    finally:
        for w in d.writers:
            w.stop_pool()
        with d.engine.begin() as c:
            for name in d.tables():
                sa.Table(name, sa.MetaData()).drop(c)
        left = d.tables()
        d.engine.dispose()
        assert not left, left


def perf(host: str, name: str, ts: float = TS) -> Perf:
    return Perf(ts=ts, source="centaure-snmp@n1", host=host, address="10.0.0.1",
                device_type="router",
                metrics=[Metric(name=name, index="1", value=12, kind="counter",
                                oid="1.3.6.1.2.1.2.2.1.10")])


def dl(mid: str) -> Delivery:
    return Delivery(body=b"", exchange="x", routing_key="k", message_id=mid)


def create(db: Db, name: str, *cols: sa.Column) -> str:
    md = sa.MetaData()
    sa.Table(db.prefix + name, md, *cols)
    md.create_all(db.engine)
    return db.prefix + name


@pytest_twisted.ensureDeferred
async def test_alarm_history_gets_no_alter_and_no_row(db):
    table = create(db, "alarm_history", sa.Column("id", sa.Integer, primary_key=True),
                   sa.Column("ref", sa.BigInteger), sa.Column("state", sa.String(16)))
    before = db.columns(table)
    w = db.writer()
    # In one batch with a good message: the good one is stored, the other refused.
    results = await defer.DeferredList(
        [w.handle(perf("r1.example.net", "ifInOctets"), dl("ok")),
         w.handle(perf("history", "alarm"), dl("forged"))], consumeErrors=True)
    assert results[0][0] is True
    ok, failure = results[1]
    assert not ok and failure.check(RejectedMessage)
    assert table in failure.getErrorMessage() and "refused" in failure.getErrorMessage()
    assert db.columns(table) == before  # no ALTER
    assert db.count(table) == 0  # no row
    assert db.count(db.prefix + "ifInOctets_42") == 1
    # Again, now known refused: dead-lettered at once, still untouched.
    with pytest.raises(RejectedMessage):
        await w.handle(perf("history", "alarm", TS + 60), dl("forged2"))
    assert db.columns(table) == before and db.count(table) == 0


@pytest_twisted.ensureDeferred
async def test_unrelated_table_with_nullable_columns_gets_no_row(db):
    table = create(db, "audit_log", sa.Column("datetime", sa.Integer),
                   sa.Column("metric_index", sa.Integer), sa.Column("value", sa.String(63)),
                   sa.Column("who", sa.String(32)))
    w = db.writer()
    with pytest.raises(RejectedMessage, match="refused"):
        await w.handle(perf("log", "audit"), dl("forged"))
    assert db.count(table) == 0
    # A new process (empty caches) refuses it too.
    with pytest.raises(RejectedMessage, match="refused"):
        await db.writer().handle(perf("log", "audit"), dl("forged"))
    assert db.count(table) == 0


@pytest_twisted.ensureDeferred
async def test_listed_table_is_written(db):
    table = create(db, "ifInOctets_42", sa.Column("datetime", sa.Integer, nullable=False),
                   sa.Column("metric_index", sa.SmallInteger, nullable=False),
                   sa.Column("value", sa.String(63)))
    await db.writer(tables=[table]).handle(perf("r1.example.net", "ifInOctets"), dl("m"))
    assert db.count(table) == 1


@pytest_twisted.ensureDeferred
async def test_tables_created_are_bounded(db):
    w = db.writer(max_tables=2)
    await w.handle(perf("r1.example.net", "m1"), dl("1"))
    await w.handle(perf("r1.example.net", "m2"), dl("2"))
    with pytest.raises(RejectedMessage, match="limit"):
        await w.handle(perf("r1.example.net", "m3"), dl("3"))
    # The registered ones are still written; the cap holds for a new process too.
    await w.handle(perf("r1.example.net", "m1", TS + 60), dl("4"))
    with pytest.raises(RejectedMessage, match="limit"):
        await db.writer(max_tables=2).handle(perf("r1.example.net", "m4"), dl("5"))
    assert db.tables() == {db.prefix + "m1_42", db.prefix + "m2_42",
                           db.prefix + "per_device_registry"}
    assert db.count(db.prefix + "m1_42") == 2
