"""Narrow samples (series, numbers, texts) on the real MariaDB and PostgreSQL, and SQLite.

Revision 0005 moves filled tables without losing a row, and back; texts and
polls without a value are read back as they were written; two writers
creating one new series both find it.
"""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from alembic import command

from connector.consumer import Delivery
from connector.messages import Metric, Perf
from connector_db import migrate, partitions
from connector_db.store import NormalizedStore
from centaure_shared.storage import query
from centaure_shared.storage.schema import make_schema
from tests.conftest import MARIADB_URL, SQL_URLS
from tests.sql_samples import sample_rows
from tests.unit.test_db_migrate import assert_same_as_create_all, prefixed_engine, schema_diffs

pytestmark = pytest.mark.integration

DAY = 86_400_000


@pytest.fixture(params=sorted(SQL_URLS) + ["sqlite"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/n.sqlite3"
    return SQL_URLS[request.param]


def wide_rows(now: int) -> list[dict]:
    """Rows of the layout before 0005: numbers, texts, empty polls, over 12 days (several
    partitions), one far older and one ahead (the catch-all partitions), keys exact."""
    rows = []
    for d in (1, 2, 3):
        for m in (1, 2):
            for idx in ("", "1", "Gi0/1", "gi0/1 "):
                for k in range(24):
                    ts = now - 12 * DAY + k * DAY // 2 + d
                    text = m == 2 and k % 3 == 0
                    rows.append({"device_id": d, "metric_id": m, "idx": idx, "ts": ts,
                                 "value_num": None if text else d * 1000.0 + k + 0.125,
                                 "value_text": (f"état {k}" if k else None) if text else None})
    rows.append({"device_id": 1, "metric_id": 1, "idx": "", "ts": now - 4000 * DAY,
                 "value_num": -1.5, "value_text": None})
    rows.append({"device_id": 1, "metric_id": 1, "idx": "", "ts": now + 30 * DAY,
                 "value_num": 2.0**60, "value_text": None})
    return rows


def rollup_rows(now: int) -> list[dict]:
    """5-minute rollups, one of a series whose raw rows are gone."""
    return [{"device_id": d, "metric_id": 1, "idx": idx, "ts": now - 20 * DAY + k * 300_000,
             "min_value": 1.0, "max_value": 3.0 + k, "avg_value": 2.0, "value_count": 3,
             "last_value": 3.0, "last_ts": now - 20 * DAY + k * 300_000 + 1}
            for d, idx in ((1, ""), (9, "gone")) for k in range(3)]


def key(row: dict) -> tuple:
    return (row["device_id"], row["metric_id"], row["idx"], row["ts"])


def wide(conn, name: str) -> list[dict]:
    t = sa.Table(name, sa.MetaData(), autoload_with=conn)
    return sorted((dict(r._mapping) for r in conn.execute(sa.select(t))), key=key)


def part_names(conn, table: str) -> list[str]:
    return [p.name for p in partitions.partitions(conn, table)]


def test_migration_0005_keeps_every_row_and_its_downgrade_too(url):
    now = int(time.time() * 1000)
    with prefixed_engine(url) as (engine, p):
        with engine.connect() as c:
            command.upgrade(migrate._config(p, c), "0004")
            c.commit()
        rows = wide_rows(now)
        with engine.begin() as c:
            c.execute(sa.insert(sa.table(f"{p}samples", *(sa.column(k) for k in rows[0]))), rows)
            roll = rollup_rows(now)
            c.execute(sa.insert(sa.table(f"{p}rollups_5m", *(sa.column(k) for k in roll[0]))),
                      roll)
        with engine.connect() as c:
            parts_before = part_names(c, f"{p}samples")
        assert migrate.upgrade(engine, p) == "0005"
        schema = make_schema(p)
        with engine.connect() as c:
            assert sorted(sample_rows(c, schema), key=key) == sorted(rows, key=key)
            # One series per (device, metric, index), those known only from rollups too.
            assert c.execute(sa.select(sa.func.count()).select_from(schema.series)).scalar() \
                == 3 * 2 * 4 + 1
            se, r = schema.series, schema.rollups_5m
            values = [col for col in r.c if col.name != "series_id"]
            got = [dict(row._mapping) for row in c.execute(
                sa.select(se.c.device_id, se.c.metric_id, se.c.idx, *values)
                .join_from(r, se, se.c.id == r.c.series_id))]
            assert sorted(got, key=key) == sorted(roll, key=key)
            # The same partitions, under the same names: maintenance goes on as before.
            assert part_names(c, schema.samples.name) == parts_before
            if getattr(engine.dialect, "is_mariadb", False):
                # Page-compressed, the rollups too (the dialect's name is "mysql").
                for t in (schema.samples, schema.rollups_5m, schema.rollups_1h):
                    assert "page_compressed" in c.execute(sa.text(
                        "SELECT create_options FROM information_schema.tables "
                        "WHERE table_schema = DATABASE() AND table_name = :t"),
                        {"t": t.name}).scalar().lower(), t.name
        assert schema_diffs(engine, p) == []
        assert_same_as_create_all(engine, p)
        # Read back through the public queries, texts and empty polls included.
        name_devices_and_metrics(engine, schema)
        got = query.samples(engine, schema, "d1", "m2", index="1", limit=4, order="asc")
        assert [r.value for r in got] == [None, 1001.125, 1002.125, "état 3"]
        latest = query.latest_samples(engine, schema, "d1", "m2")
        assert [(r.index, r.value) for r in latest] == [
            ("", 1023.125), ("1", 1023.125), ("Gi0/1", 1023.125), ("gi0/1 ", 1023.125)]

        with engine.connect() as c:
            command.downgrade(migrate._config(p, c), "0004")
            c.commit()
        with engine.connect() as c:
            assert wide(c, f"{p}samples") == sorted(rows, key=key)
            assert wide(c, f"{p}rollups_5m") == sorted(roll, key=key)
            assert part_names(c, f"{p}samples") == parts_before
            assert not sa.inspect(c).has_table(f"{p}series")
            assert not sa.inspect(c).has_table(f"{p}samples_text")


def name_devices_and_metrics(engine, schema) -> None:
    """Devices d1.. and metrics m1, m2 for the ids the rows were made with."""
    with engine.begin() as c:
        c.execute(sa.insert(schema.devices), [{"id": i, "name": f"d{i}"} for i in (1, 2, 3, 9)])
        c.execute(sa.insert(schema.metrics), [{"id": 1, "name": "m1", "kind": "gauge"},
                                              {"id": 2, "name": "m2", "kind": "text"}])


def perf(ts: float, host: str = "r1", values=(12.5, "up", None, 0.0)) -> Perf:
    return Perf(ts=ts, source="centaure-snmp@n1", host=host, address="10.0.0.1",
                device_type="router",
                metrics=[Metric(name=f"m{i}", index="1", value=v,
                                kind="text" if isinstance(v, str) else "gauge",
                                oid=f"1.3.6.1.4.1.9.{i}")
                         for i, v in enumerate(values)])


def test_texts_and_empty_polls_are_read_back_as_written(url):
    with prefixed_engine(url) as (engine, p):
        migrate.upgrade(engine, p)
        schema = make_schema(p)
        store = NormalizedStore(engine, schema)
        t0 = 1_796_515_200.0
        batches = [[perf(t0), perf(t0, "r2", values=("ü" * 255, -3.25, None, None))],
                   [perf(t0 + 60, values=(13.0, "down", 7.0, None))]]
        for i, batch in enumerate(batches):
            items = [store.prepare(m, Delivery(b"", "x", "k", message_id=f"{i}.{j}"))
                     for j, m in enumerate(batch)]
            store.write(items)
        assert [(r.metric, r.ts, r.value) for r in query.samples(engine, schema, "r1", order="asc")] \
            == [("m0", t0, 12.5), ("m1", t0, "up"), ("m2", t0, None), ("m3", t0, 0.0),
                ("m0", t0 + 60, 13.0), ("m1", t0 + 60, "down"), ("m2", t0 + 60, 7.0),
                ("m3", t0 + 60, None)]
        assert [(r.host, r.metric, r.value) for r in query.latest_samples(engine, schema)] == [
            ("r1", "m0", 13.0), ("r1", "m1", "down"), ("r1", "m2", 7.0), ("r1", "m3", None),
            ("r2", "m0", "ü" * 255), ("r2", "m1", -3.25), ("r2", "m2", None), ("r2", "m3", None)]
        assert {d.name: d.last_ts for d in query.devices(engine, schema)} == {
            "r1": t0 + 60, "r2": t0}
        with engine.connect() as c:
            n = c.execute(sa.select(sa.func.count()).select_from(schema.samples_text)).scalar()
        assert n == 2 + 3 + 2  # r1: up, None; r2: the text, None, None; r1 later: down, None


def test_a_series_another_writer_is_creating_is_found():
    """Writer B stores a sample of a series that writer A has inserted and not committed.

    B's insert-ignore of the series waits for A's commit and skips the row; B
    must still find the series' id although its snapshot (MariaDB REPEATABLE
    READ, taken by its select of the device's id) predates A's commit.
    """
    with prefixed_engine(MARIADB_URL) as (engine, p):
        migrate.upgrade(engine, p)
        schema = make_schema(p)
        with engine.begin() as c:
            c.execute(sa.insert(schema.devices).values(id=1, name="h-new"))
            c.execute(sa.insert(schema.metrics).values(id=1, name="m0", kind="gauge"))
        store = NormalizedStore(engine, schema)
        item = store.prepare(perf(1_796_515_200.0, "h-new", values=(2.0,)),
                             Delivery(b"", "x", "k", message_id="p1"))
        result: list = []
        with engine.connect() as a:
            a_tx = a.begin()
            a.execute(sa.insert(schema.series).values(device_id=1, metric_id=1, idx="1"))

            def write_b() -> None:
                try:
                    result.append(store.write([item]))
                except Exception as e:  # reported below
                    result.append(e)

            b = threading.Thread(target=write_b)
            b.start()
            time.sleep(0.5)  # B waits for A's row
            assert not result, result
            a_tx.commit()
            b.join(30)
        assert result and isinstance(result[0], dict), result
        assert [r.value for r in query.samples(engine, schema, "h-new")] == [2.0]
