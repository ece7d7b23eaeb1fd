"""The per_device layout (the legacy table per metric per device) on SQLite, via SqlWriter."""

from __future__ import annotations

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor
from twisted.logger import formatEvent, globalLogPublisher

from connector.consumer import Delivery
from connector.messages import Event, Metric, Perf, Varbind
from connector.settings import SettingsError, settings_from_string
from connector_db.per_device import PerDeviceStore
from centaure_shared.storage.schema import create_all, make_schema
from connector_db.settings import DbSettings, parse_template
from connector_db.store import NormalizedStore, UnstorableMessage
from connector_db.writer import SqlWriter

TS = 1_700_000_000.25
LEGACY = DbSettings()  # the defaults: the legacy layout's columns and types


def metric(name="ifInOctets", index="1", value=12, kind="counter", **kw) -> Metric:
    return Metric(name=name, index=index, value=value, kind=kind, oid="1.3.6.1.2.1.2.2.1.10",
                  **kw)


def perf(metrics=None, host="r1.example.net", ts=TS) -> Perf:
    if metrics is None:
        metrics = [metric(index=str(i), value=i * 10) for i in (1, 2, 3)] + [
            metric(name="sysUpTime", index="", value=99.5, kind="gauge")]
    return Perf(ts=ts, source="centaure-snmp@n1", host=host, address="10.0.0.1",
                device_type="router", metrics=metrics)


def event(ts=TS) -> Event:
    return Event(ts=ts, source="centaure-traps@n1", host="r1.example.net",
                 address="10.0.0.1", snmp_version="v2c", trap_oid="1.3.6.1.6.3.1.1.5.3",
                 name="linkDown", severity="major",
                 varbinds=[Varbind(oid="1.3.6.1.2.1.2.2.1.1.3", type="Integer", value=3)],
                 message="link 3 down", action="raise", alarm="linkDown", key="3")


def delivery(mid: str | None = None) -> Delivery:
    return Delivery(body=b"", exchange="x", routing_key="k", message_id=mid)


def rows(engine, table: str, *order: str) -> list[tuple]:
    t = sa.Table(table, sa.MetaData(), autoload_with=engine)
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(
            sa.select(t).order_by(*(t.c[o] for o in order or t.c.keys())))]


def tables(engine) -> set[str]:
    """The tables, but the per_device writer's registry."""
    return set(sa.inspect(engine).get_table_names()) - {"per_device_registry"}


@pytest.fixture
def engine(tmp_path):
    e = sa.create_engine(f"sqlite:///{tmp_path}/pd.sqlite3")
    yield e
    e.dispose()


@pytest.fixture
def make_writer(engine):
    writers: list[SqlWriter] = []

    def make(struct=LEGACY.table_struct, template="{metric}_{device}", device_ids=None,
             fallback=None, tables=(), max_tables=10_000, **kw) -> SqlWriter:
        store = PerDeviceStore(engine, struct, template,
                               device_ids={"r1.example.net": "42"} if device_ids is None
                               else device_ids, fallback=fallback, tables=tables,
                               max_tables=max_tables)
        w = SqlWriter(store, reactor, **{"batch_interval": 0.01, **kw})
        writers.append(w)
        return w

    yield make
    for w in writers:
        w.stop_pool()


# --- the legacy layout -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_legacy_default_structure(engine, make_writer):
    w = make_writer()
    await w.handle(perf(), delivery("p1"))
    assert tables(engine) == {"ifInOctets_42", "sysUpTime_42"}
    cols = {c["name"]: c for c in sa.inspect(engine).get_columns("ifInOctets_42")}
    assert list(cols) == ["datetime", "metric_index", "value"]
    assert isinstance(cols["datetime"]["type"], sa.Integer)
    assert isinstance(cols["metric_index"]["type"], sa.SmallInteger)
    assert isinstance(cols["value"]["type"], sa.String) and cols["value"]["type"].length == 63
    assert not cols["datetime"]["nullable"] and not cols["metric_index"]["nullable"]
    # Whole UNIX seconds, the index as a number, the value as text (the legacy VARCHAR).
    assert rows(engine, "ifInOctets_42") == [(1_700_000_000, 1, "10"), (1_700_000_000, 2, "20"),
                                             (1_700_000_000, 3, "30")]
    assert rows(engine, "sysUpTime_42") == [(1_700_000_000, 0, "99.5")]  # a scalar: index 0
    uniques = sa.inspect(engine).get_unique_constraints("ifInOctets_42")
    assert [u["column_names"] for u in uniques] == [["datetime", "metric_index"]]
    assert w.rows_written == {"{metric}_{device}": 4}


@pytest_twisted.ensureDeferred
async def test_device_without_inventory_id_uses_its_host_name(engine, make_writer):
    w = make_writer(device_ids={"other": "7"})
    await w.handle(perf(host="r1", metrics=[metric()]), delivery())
    assert tables(engine) == {"ifInOctets_r1"}


@pytest_twisted.ensureDeferred
async def test_every_source_and_type(engine, make_writer):
    struct = ["t:ts:bigint", "tms:ts_ms:bigint", "idx:index:varchar(16)", "v:value:text",
              "vn:value_num:double", "vt:value_text:varchar(32)", "u:unit:varchar(8)",
              "k:kind:varchar(8)", "o:oid:varchar(64)", "h:host:varchar(64)",
              "a:address:varchar(64)", "d:device:varchar(8)", "m:metric:varchar(32)",
              "n:value:int"]
    w = make_writer(struct=struct)
    await w.handle(perf(metrics=[metric(index="", value="7", kind="text", unit="pkt"),
                                 metric(index="1.4", value=3.0, kind="gauge")]), delivery())
    assert rows(engine, "ifInOctets_42", "idx") == [
        (1_700_000_000, 1_700_000_000_250, "", "7", None, "7", "pkt", "text",
         "1.3.6.1.2.1.2.2.1.10", "r1.example.net", "10.0.0.1", "42", "ifInOctets", 7),
        (1_700_000_000, 1_700_000_000_250, "1.4", "3.0", 3.0, None, None, "gauge",
         "1.3.6.1.2.1.2.2.1.10", "r1.example.net", "10.0.0.1", "42", "ifInOctets", 3)]


# --- on demand --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_tables_and_missing_columns_created_on_demand_rows_kept(engine, make_writer):
    w = make_writer()
    await w.handle(perf(), delivery("p1"))
    before = rows(engine, "ifInOctets_42")
    # A new process with a wider structure: the column is added, the rows stay.
    wider = (*LEGACY.table_struct, "unit:unit:varchar(16)", "at_ms:ts_ms:bigint")
    w2 = make_writer(struct=wider)
    await w2.handle(perf(ts=TS + 60, metrics=[metric(unit="octets")]), delivery("p2"))
    cols = [c["name"] for c in sa.inspect(engine).get_columns("ifInOctets_42")]
    assert cols == ["datetime", "metric_index", "value", "unit", "at_ms"]
    assert rows(engine, "ifInOctets_42") == [r + (None, None) for r in before] + [
        (1_700_000_060, 1, "12", "octets", 1_700_000_060_250)]
    # Its original unique key (datetime, metric_index) still skips replays.
    await w2.handle(perf(ts=TS + 60, metrics=[metric(unit="octets")]), delivery("p2"))
    await w2.handle(perf(), delivery("p1"))
    assert len(rows(engine, "ifInOctets_42")) == 4
    # A new metric in the same batch gets a new table with every column.
    await w2.handle(perf(metrics=[metric(name="ifOutOctets")]), delivery("p3"))
    assert [c["name"] for c in sa.inspect(engine).get_columns("ifOutOctets_42")] == [
        "datetime", "metric_index", "value", "unit", "at_ms"]
    assert w2.health()["per_device_tables_cached"] == 3


def test_table_cache_is_filled_only_after_a_commit(engine):
    class Failing:
        """A fallback whose writes fail, after the per-device DDL."""

        def prepare(self, message, delivery):
            return type("P", (), {"nrows": 1})()

        def write_in(self, conn, items):
            raise RuntimeError("boom")

        def after_commit(self, state):
            raise AssertionError("not committed")

        def health(self):
            return {}

    store = PerDeviceStore(engine, LEGACY.table_struct, device_ids={"r1.example.net": "42"},
                           fallback=Failing())
    items = [store.prepare(perf(), delivery()), store.prepare(event(), delivery())]
    with pytest.raises(RuntimeError, match="boom"):
        store.write(items)
    # The DDL ran first (MySQL commits it at once; SQLite rolls it back with the
    # registry's rows), the rows were rolled back: the store caches no table until
    # a commit.
    assert store.health()["per_device_tables_cached"] == 0
    assert "ifInOctets_42" not in tables(engine) or rows(engine, "ifInOctets_42") == []
    # The next write inspects the tables again and finds their unique key.
    assert store.write(items[:1]) == {"{metric}_{device}": 4}
    assert store.write(items[:1]) == {"{metric}_{device}": 0}
    assert store.health()["per_device_tables_cached"] == 2
    assert not any(t.select_keys for t in store._targets.values())


# --- idempotency -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_same_perf_twice_writes_no_duplicates(engine, make_writer):
    w = make_writer()
    await w.handle(perf(), delivery("p1"))
    await w.handle(perf(), delivery("p1"))  # a later batch
    await defer.gatherResults([w.handle(perf(), delivery("p1")) for _ in range(2)])  # one batch
    w2 = make_writer()  # a new process: empty table cache
    await w2.handle(perf(), delivery("p1"))
    assert len(rows(engine, "ifInOctets_42")) == 3 and len(rows(engine, "sysUpTime_42")) == 1
    assert w.rows_written == {"{metric}_{device}": 4}


@pytest_twisted.ensureDeferred
async def test_pre_existing_table_without_unique_key_gets_no_duplicates(engine, make_writer):
    # A legacy table: no unique key, an AUTO_INCREMENT-like id, a column we do not know.
    md = sa.MetaData()
    sa.Table("ifInOctets_42", md, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("datetime", sa.Integer, nullable=False, server_default="0"),
             sa.Column("metric_index", sa.SmallInteger, nullable=False, server_default="0"),
             sa.Column("value", sa.String(63)), sa.Column("note", sa.String(10)))
    md.create_all(engine)
    with engine.begin() as c:
        c.execute(md.tables["ifInOctets_42"].insert(),
                  [{"datetime": 1_700_000_000, "metric_index": 1, "value": "10"},
                   {"datetime": 1_699_999_940, "metric_index": 2, "value": "5"}])
    w = make_writer(tables=["ifInOctets_42"])  # a legacy table, listed for the writer
    await w.handle(perf(), delivery("p1"))
    await defer.gatherResults([w.handle(perf(), delivery("p1")) for _ in range(2)])
    await make_writer(tables=["ifInOctets_42"]).handle(perf(), delivery("p1"))
    assert rows(engine, "ifInOctets_42", "id") == [
        (1, 1_700_000_000, 1, "10", None), (2, 1_699_999_940, 2, "5", None),
        (3, 1_700_000_000, 2, "20", None), (4, 1_700_000_000, 3, "30", None)]
    # The table was left as it was: no key added.
    assert sa.inspect(engine).get_unique_constraints("ifInOctets_42") == []
    assert not any(i["unique"] for i in sa.inspect(engine).get_indexes("ifInOctets_42"))


@pytest_twisted.ensureDeferred
async def test_pre_existing_table_with_its_own_unique_index_uses_it(engine, make_writer):
    md = sa.MetaData()
    t = sa.Table("ifInOctets_42", md, sa.Column("datetime", sa.Integer, nullable=False),
                 sa.Column("metric_index", sa.SmallInteger, nullable=False),
                 sa.Column("value", sa.String(63)))
    sa.Index("by_key", t.c.metric_index, t.c.datetime, unique=True)
    md.create_all(engine)
    w = make_writer(tables=["ifinoctets_42"])  # names fold as MySQL and SQLite do
    for _ in range(2):
        await w.handle(perf(), delivery("p1"))
    assert len(rows(engine, "ifInOctets_42")) == 3
    store = w.store
    assert store._targets["ifInOctets_42"].select_keys is False


def test_pre_existing_column_unlike_table_struct_is_logged(engine):
    md = sa.MetaData()
    sa.Table("ifInOctets_42", md, sa.Column("datetime", sa.Integer, nullable=False),
             sa.Column("metric_index", sa.String(8), nullable=False),
             sa.Column("value", sa.String(4)))
    md.create_all(engine)
    store = PerDeviceStore(engine, LEGACY.table_struct, device_ids={"r1.example.net": "42"},
                           tables=["ifInOctets_42"])
    seen: list[str] = []

    def observer(event) -> None:
        seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    try:
        store.write([store.prepare(perf([metric()]), delivery())])
    finally:
        globalLogPublisher.removeObserver(observer)
    assert [m for m in seen if "per_device" in m] == [
        "per_device table ifInOctets_42: column metric_index is VARCHAR(8) in the database "
        "but smallint in table_struct",
        "per_device table ifInOctets_42: column value is VARCHAR(4) in the database but "
        "varchar(63) in table_struct"]


def test_dropped_table_is_inspected_again(engine):
    store = PerDeviceStore(engine, LEGACY.table_struct, device_ids={"r1.example.net": "42"})
    item = store.prepare(perf([metric()]), delivery())
    store.write([item])
    sa.Table("ifInOctets_42", sa.MetaData()).drop(engine)
    with pytest.raises(sa.exc.OperationalError, match="no such table"):
        store.write([item])
    assert store.write([item]) == {"{metric}_{device}": 1}  # created again


# --- refused messages --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_bad_metric_name_and_too_long_value_rejected_alone(engine, make_writer):
    w = make_writer(batch_size=10_000, batch_interval=0.05)
    ds = [
        w.handle(perf(), delivery("ok1")),
        w.handle(perf(metrics=[metric(name="if.in-octets")]), delivery("bad-name")),
        w.handle(perf(metrics=[metric(name="sysDescr", index="", value="x" * 64, kind="text")]),
                 delivery("too-long")),
        w.handle(perf(metrics=[metric(index="40000")]), delivery("out-of-range")),
        w.handle(perf(metrics=[metric(index="eth0")]), delivery("not-a-number")),
        w.handle(perf(metrics=[metric(name="m" * 62)]), delivery("name-too-long")),
        w.handle(perf(ts=TS + 60), delivery("ok2")),
    ]
    results = await defer.DeferredList(ds, consumeErrors=True)
    assert [ok for ok, _ in results] == [True, False, False, False, False, False, True]
    reasons = [r.value for ok, r in results if not ok]
    assert all(isinstance(r, UnstorableMessage) for r in reasons)
    assert str(reasons[0]) == (
        "metric 'if.in-octets' of device '42': table name 'if.in-octets_42' is not an SQL "
        "identifier (letters, digits and '_', a letter or '_' first, at most 64 characters)")
    assert str(reasons[1]) == (
        "metric 'sysDescr' index '': column 'value' (varchar(63)) cannot hold value "
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...: 64 characters, "
        "longer than 63")
    assert str(reasons[2]) == ("metric 'ifInOctets' index '40000': column 'metric_index' "
                               "(smallint) cannot hold index '40000': out of range "
                               "(-32768 to 32767)")
    assert "column 'metric_index' (smallint) cannot hold index 'eth0': not a number" \
        in str(reasons[3])
    assert "is not an SQL identifier" in str(reasons[4])
    assert len(rows(engine, "ifInOctets_42")) == 6 and len(rows(engine, "sysUpTime_42")) == 2
    assert tables(engine) == {"ifInOctets_42", "sysUpTime_42"}
    assert w.counters.get("rejected") == 5 and w.counters.get("batches") == 1


def test_values_checked_against_their_column(engine):
    struct = ["t:ts:int", "i:index:varchar(8)", "n:value:smallint", "d:value_num:double",
              "s:value:varchar(4)"]
    store = PerDeviceStore(engine, struct, device_ids={"r1.example.net": "42"})

    def reason(value) -> str:
        with pytest.raises(UnstorableMessage) as info:
            store.prepare(perf(metrics=[metric(value=value)]), delivery())
        return str(info.value)

    assert reason(2**15).endswith("column 'n' (smallint) cannot hold value 32768: out of "
                                  "range (-32768 to 32767)")
    assert reason(1.5).endswith("column 'n' (smallint) cannot hold value 1.5: not a whole "
                                "number")
    assert reason("up").endswith("column 'n' (smallint) cannot hold value 'up': not a number")
    assert reason(float("inf")).endswith("cannot hold value inf: not a whole number")
    assert reason(12345).endswith("column 's' (varchar(4)) cannot hold value 12345: "
                                  "5 characters, longer than 4")
    texts = PerDeviceStore(engine, ["t:ts:int", "i:index:varchar(8)", "s:value:text"],
                           device_ids={"r1.example.net": "42"})
    with pytest.raises(UnstorableMessage, match="cannot hold value '1\\\\x002': NUL character"):
        texts.prepare(perf(metrics=[metric(value="1\x002")]), delivery())
    ok = store.prepare(perf(metrics=[metric(value=" 42 "), metric(index="2", value=7.0),
                                     metric(index="3", value=None)]), delivery())
    assert ok.rows["ifInOctets_42"] == [
        {"t": 1_700_000_000, "i": "1", "n": 42, "d": None, "s": " 42 "},
        {"t": 1_700_000_000, "i": "2", "n": 7, "d": 7.0, "s": "7.0"},
        {"t": 1_700_000_000, "i": "3", "n": None, "d": None, "s": None}]


def test_table_names_are_filled_in_one_pass_and_checked(engine):
    store = PerDeviceStore(engine, LEGACY.table_struct, "pd_{device}_{metric}",
                           device_ids={"r1": "42"})
    assert store.table_name("ifInOctets", "42") == "pd_42_ifInOctets"
    assert store.table_name("order", "42") == "pd_42_order"
    with pytest.raises(UnstorableMessage, match="not an SQL identifier"):
        store.table_name("{device}", "42")  # stays literal, braces included
    with pytest.raises(UnstorableMessage, match="not an SQL identifier"):
        store.table_name("é", "42")  # ASCII only
    first_digit = PerDeviceStore(engine, LEGACY.table_struct, "{device}_{metric}")
    with pytest.raises(UnstorableMessage, match="'42_x' is not an SQL identifier"):
        first_digit.table_name("x", "42")


@pytest_twisted.ensureDeferred
async def test_quoted_identifiers_on_sqlite(engine, make_writer):
    # Reserved words and upper case, as tables and columns: SQLAlchemy quotes them.
    w = make_writer(struct=["select:ts:int", "Order:index:varchar(8)", "from:value:double"])
    await w.handle(perf(metrics=[metric(name="order", value=1), metric(name="Group", value=2)]),
                   delivery())
    assert tables(engine) == {"order_42", "Group_42"}
    assert rows(engine, "order_42") == [(1_700_000_000, "1", 1.0)]


# --- other messages ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_events_go_to_the_fallback_in_the_same_batch(engine, make_writer):
    schema = make_schema("n_")
    create_all(engine, schema)
    fallback = NormalizedStore(engine, schema)
    w = make_writer(fallback=fallback, batch_size=10_000, batch_interval=0.05)
    await defer.gatherResults([w.handle(perf(), delivery("p1")), w.handle(event(), delivery("e1")),
                               w.handle(event(), delivery("e1"))])
    assert w.counters.get("batches") == 1
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(schema.events)).scalar() == 1
        # perf goes to the per-device tables only, never to the normalized samples
        assert c.execute(sa.select(sa.func.count()).select_from(schema.samples)).scalar() == 0
    assert len(rows(engine, "ifInOctets_42")) == 3
    assert w.rows_written == {"{metric}_{device}": 4, "n_events": 1}
    health = w.health()
    assert "devices_cached" in health and health["per_device_tables_cached"] == 2


@pytest_twisted.ensureDeferred
async def test_without_fallback_other_messages_are_acked_and_kept_nowhere(engine, make_writer):
    w = make_writer()
    assert await w.handle(event(), delivery("e1")) is None
    assert tables(engine) == set()


def test_fallback_must_share_the_transaction(engine):
    class OnlyIStore:
        def prepare(self, message, delivery):
            return None

        def write(self, items):
            return {}

    with pytest.raises(TypeError, match="write_in"):
        PerDeviceStore(engine, LEGACY.table_struct, fallback=OnlyIStore())


# --- settings ------------------------------------------------------------------------------


def db_error(text: str) -> str:
    with pytest.raises(SettingsError) as info:
        settings_from_string(f"[db]\n{text}\n", source="settings.ini")
    return str(info.value)


def test_bad_table_struct_items_stop_start_up_with_a_clear_line():
    allowed = ("expected name:source:type items separated by commas or newlines, with a column "
               "of source ts or ts_ms and one of source index")
    start = "settings.ini: [db] table_struct = "
    assert db_error("table_struct = datetime:ts:int, value:valeur:varchar(63)") == (
        f"{start}'datetime:ts:int, value:valeur:varchar(63)': item 'value:valeur:varchar(63)' "
        "has unknown source 'valeur': expected one of ts, ts_ms, index, value, value_num, "
        f"value_text, unit, kind, oid, host, address, device, metric; {allowed}")
    cases = {
        "a:ts:int, i:index:int, v:value": "item 'v:value' is not name:source:type",
        "a:ts:int, i:index:int, v:value:int:x": "item 'v:value:int:x' is not name:source:type",
        "a:ts:int, i:index:int, 1v:value:int": "item '1v:value:int' has column name '1v'",
        "a:ts:int, i:index:int, v-1:value:int": "item 'v-1:value:int' has column name 'v-1'",
        f"a:ts:int, i:index:int, {'v' * 65}:value:int": "has column name 'vvvv",
        "a:ts:int, i:index:int, v:value:float": "item 'v:value:float' has unknown type 'float'",
        "a:ts:int, i:index:int, v:value:varchar(0)": "varchar length must be from 1 to 1024",
        "a:ts:int, i:index:int, v:value:varchar(1025)": "varchar length must be from 1 to 1024",
        "a:ts:int, i:index:int, v:value:varchar": "has unknown type 'varchar'",
        "a:ts:int, i:index:int, V:value:int, v:unit:text": "column 'v' appears twice",
        "a:ts:smallint, i:index:int": "has type smallint too small for source ts",
        "a:ts_ms:int, i:index:int": "has type int too small for source ts_ms",
        "a:ts:int, i:index:text": "is part of the unique key (source index)",
        "a:ts:int, i:index:varchar(256)": "is part of the unique key (source index)",
        "a:ts:int, v:value:int": "no column of source index",
        "i:index:int, v:value:int": "no column of source ts or ts_ms",
        "": "nothing given",
    }
    for value, detail in cases.items():
        message = db_error(f"table_struct = {value}")
        assert message.startswith(f"{start}{value!r}: ") and detail in message, message
        assert message.endswith(allowed), message
    # Type names are case-insensitive (legacy settings write INT and VARCHAR(63)); spaces around ':'.
    s = settings_from_string("[db]\ntable_struct = d : ts : INT,\n  i:index:VarChar(8)\n")
    assert [str(c) for c in s.section("db").table_struct] == ["d:ts:int", "i:index:varchar(8)"]


def test_bad_table_template_stops_start_up_with_a_clear_line():
    allowed = ("expected a table name with {metric} and {device}, otherwise letters, digits "
               "and '_' (e.g. {metric}_{device})")
    cases = {
        "{metric}": "has no {device}",
        "perf_{device}": "has no {metric}",
        "{metric}-{device}": "has '-' outside {metric} and {device}",
        "{metric}_{device}_{host}": "has '_{host}' outside {metric} and {device}",
        "{metric}.{device}": "has '.' outside",
        "1_{metric}_{device}": "must start with a letter, '_' or a placeholder",
        "x" * 63 + "{metric}{device}": "has 63 fixed characters",
    }
    for value, detail in cases.items():
        message = db_error(f"table_template = {value}")
        assert message.startswith(f"settings.ini: [db] table_template = {value!r}: {detail}")
        assert message.endswith(allowed), message
    assert parse_template("pd_{metric}_{device}") == "pd_{metric}_{device}"


def test_store_refuses_bad_struct_and_template_too(engine):
    with pytest.raises(ValueError, match="item 'v:value:blob' has unknown type 'blob'"):
        PerDeviceStore(engine, ["t:ts:int", "i:index:int", "v:value:blob"])
    with pytest.raises(ValueError, match="table_template '{metric}' has no {device}"):
        PerDeviceStore(engine, LEGACY.table_struct, "{metric}")


def test_from_settings(engine):
    s = settings_from_string("[db]\nlayout = per_device\ntable_template = pd_{metric}_{device}\n"
                             "table_struct = at:ts_ms:bigint, idx:index:varchar(32)\n")
    store = PerDeviceStore.from_settings(engine, s.section("db"), {"r1": "9"}, None)
    p = store.prepare(perf(host="r1", metrics=[metric()]), delivery())
    assert p.rows == {"pd_ifInOctets_9": [{"at": 1_700_000_000_250, "idx": "1"}]}
    assert p.nrows == 1
    assert store.prepare(perf(metrics=[]), delivery()) is None
