"""The per_device layout against the real MariaDB and PostgreSQL of this machine.

Every table of a test is named from a template with a unique prefix
(``t<hex>_{metric}_{device}``) in database ``test``; all of them, and the
normalized tables of the fallback, are dropped afterwards.
"""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor

from connector.consumer import Delivery, RejectedMessage
from connector.messages import Event, Metric, Perf, Varbind
from connector_db.per_device import PerDeviceStore
from centaure_shared.storage.schema import create_all, drop_all, make_schema
from connector_db.settings import DbSettings
from connector_db.store import NormalizedStore, UnstorableMessage
from connector_db.writer import SqlWriter

from tests.conftest import SQL_URLS

pytestmark = pytest.mark.integration

URLS = SQL_URLS
TS = 1_700_000_000.125
LEGACY = DbSettings().table_struct
DEVICES = {"r1.example.net": "42"}


class Db:
    """One test's engine, table prefix and writers."""

    def __init__(self, engine: sa.Engine, prefix: str) -> None:
        self.engine = engine
        self.prefix = prefix
        self.template = prefix + "{metric}_{device}"
        self.writers: list[SqlWriter] = []

    @property
    def registry(self) -> str:
        """This test's registry of the tables its writers created (dropped with them)."""
        return self.prefix + "per_device_registry"

    def writer(self, struct=LEGACY, fallback=None, tables=(), max_tables=10_000,
               **kw) -> SqlWriter:
        store = PerDeviceStore(self.engine, struct, self.template, DEVICES, fallback,
                               tables=tables, max_tables=max_tables,
                               registry_table=self.registry)
        w = SqlWriter(store, reactor, **{"batch_interval": 0.01, **kw})
        self.writers.append(w)
        return w

    def table(self, metric: str, device: str = "42") -> sa.Table:
        return sa.Table(f"{self.prefix}{metric}_{device}", sa.MetaData(),
                        autoload_with=self.engine)

    def rows(self, metric: str, *order: str) -> list[tuple]:
        t = self.table(metric)
        with self.engine.connect() as c:
            return [tuple(r) for r in c.execute(
                sa.select(t).order_by(*(t.c[o] for o in order or t.c.keys())))]

    def tables(self, registry: bool = False) -> set[str]:
        """This test's tables (the registry too when ``registry``)."""
        with self.engine.connect() as c:
            return {n for n in sa.inspect(c).get_table_names()
                    if n.lower().startswith(self.prefix)
                    and (registry or n.lower() != self.registry.lower())}


@pytest.fixture(params=sorted(URLS))
def db(request):
    engine = sa.create_engine(URLS[request.param])
    d = Db(engine, f"t{uuid.uuid4().hex[:10]}_")
    try:
        yield d
    finally:
        for w in d.writers:
            w.stop_pool()
        with engine.begin() as c:
            for name in d.tables(registry=True):
                sa.Table(name, sa.MetaData()).drop(c)
        left = d.tables(registry=True)
        engine.dispose()
        assert not left, left


def metric(name="ifInOctets", index="1", value=12, kind="counter", **kw) -> Metric:
    return Metric(name=name, index=index, value=value, kind=kind, oid="1.3.6.1.2.1.2.2.1.10",
                  **kw)


def perf(metrics=None, ts=TS) -> Perf:
    if metrics is None:
        metrics = [metric(index=str(i), value=i * 10) for i in (1, 2, 3)] + [
            metric(name="sysUpTime", index="", value=99.5, kind="gauge")]
    return Perf(ts=ts, source="centaure-snmp@n1", host="r1.example.net", address="10.0.0.1",
                device_type="router", metrics=metrics)


def event() -> Event:
    return Event(ts=TS, source="centaure-traps@n1", host="r1.example.net", address="10.0.0.1",
                 snmp_version="v2c", trap_oid="1.3.6.1.6.3.1.1.5.3", name="linkDown",
                 severity="major", varbinds=[Varbind(oid="1.3.6.1.2.1.2.2.1.1.3",
                                                     type="Integer", value=3)],
                 message="link 3 down", action="raise", alarm="linkDown", key="3")


def dl(mid: str | None = None) -> Delivery:
    return Delivery(body=b"", exchange="x", routing_key="k", message_id=mid)


@pytest_twisted.ensureDeferred
async def test_legacy_structure_and_replays_write_no_duplicates(db):
    w = db.writer()
    await w.handle(perf(), dl("p1"))
    await w.handle(perf(), dl("p1"))  # a later batch
    await defer.gatherResults([w.handle(perf(), dl("p1")) for _ in range(2)])  # one batch
    await db.writer().handle(perf(), dl("p1"))  # a new process: empty cache
    p = db.prefix
    assert db.tables() == {f"{p}ifInOctets_42", f"{p}sysUpTime_42"}  # upper case kept
    assert db.rows("ifInOctets") == [(1_700_000_000, 1, "10"), (1_700_000_000, 2, "20"),
                                     (1_700_000_000, 3, "30")]
    assert db.rows("sysUpTime") == [(1_700_000_000, 0, "99.5")]
    t = db.table("ifInOctets")
    assert isinstance(t.c.datetime.type, sa.Integer)
    assert isinstance(t.c.metric_index.type, sa.SmallInteger)
    assert t.c.value.type.length == 63
    assert w.rows_written == {db.template: 4}


@pytest_twisted.ensureDeferred
async def test_reserved_words_and_upper_case_identifiers_are_quoted(db):
    struct = ["select:ts:int", "order:index:varchar(16)", "from:value:varchar(32)",
              "Value:value_num:double", "group:ts_ms:bigint"]
    w = db.writer(struct=struct)
    msg = perf([metric(name="order", index="a", value=1), metric(name="Group", index="", value=2.5),
                metric(name="ifHCInOctets", index="7", value="x")])
    for _ in range(2):
        await w.handle(msg, dl())
    p = db.prefix
    assert db.tables() == {f"{p}order_42", f"{p}Group_42", f"{p}ifHCInOctets_42"}
    assert db.rows("order") == [(1_700_000_000, "a", "1", 1.0, 1_700_000_000_125)]
    assert db.rows("Group") == [(1_700_000_000, "", "2.5", 2.5, 1_700_000_000_125)]
    assert db.rows("ifHCInOctets") == [(1_700_000_000, "7", "x", None, 1_700_000_000_125)]
    with db.engine.connect() as c:
        cols = [col["name"] for col in sa.inspect(c).get_columns(f"{p}order_42")]
    assert cols == ["select", "order", "from", "Value", "group"]


@pytest_twisted.ensureDeferred
async def test_missing_columns_added_rows_kept_in_one_batch_with_a_fallback_event(db):
    schema = make_schema(f"{db.prefix}n_")
    create_all(db.engine, schema)
    try:
        await db.writer().handle(perf(), dl("p1"))
        before = db.rows("ifInOctets")
        # A wider structure, and a batch mixing the ALTER TABLE, rows and an event:
        # MariaDB commits implicitly on DDL, so the DDL must come first.
        wider = (*LEGACY, "unit:unit:varchar(16)", "at_ms:ts_ms:bigint")
        w = db.writer(struct=wider, fallback=NormalizedStore(db.engine, schema),
                      batch_size=10_000, batch_interval=0.05)
        await defer.gatherResults([
            w.handle(event(), dl("e1")),
            w.handle(perf([metric(unit="octets")], ts=TS + 60), dl("p2")),
            w.handle(perf([metric(name="ifOutOctets")]), dl("p3")),
            w.handle(event(), dl("e1"))])
        assert w.counters.get("batches") == 1
        assert db.rows("ifInOctets") == [r + (None, None) for r in before] + [
            (1_700_000_060, 1, "12", "octets", 1_700_000_060_125)]
        assert db.rows("ifOutOctets") == [(1_700_000_000, 1, "12", None, 1_700_000_000_125)]
        with db.engine.connect() as c:
            assert c.execute(sa.select(sa.func.count()).select_from(schema.events)).scalar() == 1
            assert c.execute(sa.select(sa.func.count()).select_from(schema.samples)).scalar() == 0
        assert w.rows_written == {db.template: 2, schema.events.name: 1}
        # The old unique key (datetime, metric_index) still skips replays.
        await w.handle(perf([metric(unit="octets")], ts=TS + 60), dl("p2"))
        assert len(db.rows("ifInOctets")) == 4
    finally:
        drop_all(db.engine, schema)


@pytest_twisted.ensureDeferred
async def test_pre_existing_table_without_unique_key_gets_no_duplicates(db):
    md = sa.MetaData()
    t = sa.Table(f"{db.prefix}ifInOctets_42", md,
                 sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                 sa.Column("datetime", sa.Integer, nullable=False, server_default="0"),
                 sa.Column("metric_index", sa.SmallInteger, nullable=False, server_default="0"),
                 sa.Column("value", sa.String(63)))
    md.create_all(db.engine)
    with db.engine.begin() as c:
        c.execute(t.insert(), [{"datetime": 1_700_000_000, "metric_index": 1, "value": "10"}])
    w = db.writer(tables=[t.name])  # a legacy table, listed for the writer
    await w.handle(perf(), dl("p1"))
    await defer.gatherResults([w.handle(perf(), dl("p1")) for _ in range(2)])
    await db.writer(tables=[t.name]).handle(perf(), dl("p1"))
    assert db.rows("ifInOctets", "id") == [(1, 1_700_000_000, 1, "10"),
                                           (2, 1_700_000_000, 2, "20"),
                                           (3, 1_700_000_000, 3, "30")]
    with db.engine.connect() as c:
        insp = sa.inspect(c)
        assert not any(i["unique"] for i in insp.get_indexes(t.name))
        assert insp.get_unique_constraints(t.name) == []


@pytest_twisted.ensureDeferred
async def test_unstorable_messages_rejected_alone(db):
    # A pre-existing column narrower than table_struct says: only the database
    # knows, and refuses the value (strict mode on MariaDB); the writer then
    # rewrites the batch one message at a time.
    md = sa.MetaData()
    sa.Table(f"{db.prefix}sysName_42", md, sa.Column("datetime", sa.Integer, nullable=False),
             sa.Column("metric_index", sa.SmallInteger, nullable=False),
             sa.Column("value", sa.String(4)))
    md.create_all(db.engine)
    w = db.writer(batch_size=10_000, batch_interval=0.05, tables=[f"{db.prefix}sysName_42"])
    ds = [
        w.handle(perf(), dl("ok1")),
        w.handle(perf([metric(name="if-in")]), dl("bad-name")),
        w.handle(perf([metric(name="sysDescr", index="", value="x" * 64, kind="text")]),
                 dl("too-long")),
        w.handle(perf([metric(index="1.3")]), dl("not-whole")),
        w.handle(perf([metric(name="sysName", index="", value="router-1", kind="text")]),
                 dl("refused-by-db")),
        w.handle(perf(ts=TS + 60), dl("ok2")),
    ]
    results = await defer.DeferredList(ds, consumeErrors=True)
    assert [ok for ok, _ in results] == [True, False, False, False, False, True]
    for _, failure in results[1:4]:
        assert failure.check(UnstorableMessage)
    assert "table name" in str(results[1][1].value)
    assert "64 characters, longer than 63" in str(results[2][1].value)
    assert "not a whole number" in str(results[3][1].value)
    assert results[4][1].check(RejectedMessage)
    assert "refused" in results[4][1].getErrorMessage()
    assert len(db.rows("ifInOctets")) == 6 and db.rows("sysName") == []


@pytest_twisted.ensureDeferred
async def test_identifier_length_follows_the_dialect(db):
    w = db.writer()
    # prefix (12) + name + "_42": 64 characters, MariaDB's limit, one over PostgreSQL's.
    name = "m" * (64 - len(db.prefix) - 3)
    d = w.handle(perf([metric(name=name)]), dl())
    if db.engine.dialect.name == "postgresql":
        with pytest.raises(UnstorableMessage, match="at most 63 characters"):
            await d
    else:
        await d
        assert len(db.rows(name)) == 1
    await w.handle(perf([metric(name=name[:-1])]), dl())
    assert len(db.rows(name[:-1])) == 1
