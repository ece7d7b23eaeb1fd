"""``centaure db maintain`` on SQLite (batched deletes) and the ``[retention]`` settings.

The partitioned tables of MariaDB and PostgreSQL are in
tests/integration/test_db_retention_sql.py.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from connector.settings import SettingsError, settings_from_string
from connector_db import migrate
from connector_db.maintain import Retention, ensure_partitions, maintain
from centaure_shared.storage.schema import make_schema
from tests.sql_samples import insert_samples

DAY = 86_400_000
NOW = 1_796_515_200.0  # seconds


@pytest.fixture
def sqlite(tmp_path):
    url = f"sqlite:///{tmp_path}/c.sqlite3"
    engine = sa.create_engine(url)
    migrate.upgrade(engine, "")
    yield engine, make_schema(""), url
    engine.dispose()


def fill(engine, schema, days: int, devices: int = 3, metrics: int = 40) -> None:
    with engine.begin() as c:
        c.execute(sa.insert(schema.devices), [{"id": d, "name": f"r{d}"}
                                              for d in range(1, devices + 1)])
        # Numbers, and one text series per device (its rows in samples_text).
        insert_samples(c, schema, [
            {"device_id": d, "metric_id": m, "idx": "", "ts": int(NOW * 1000) - day * DAY + 1,
             "value_num": 1.0 if m < metrics else None, "value_text": "up"}
            for day in range(days) for d in range(1, devices + 1) for m in range(metrics + 1)])
        for table in (schema.events, schema.notifications):
            rows = []
            for day in range(0, 400, 5):
                row = {"message_id": f"m{day}", "ts": int(NOW * 1000) - day * DAY}
                if table is schema.events:
                    row.update(host="r1", address="a", snmp_version="v2c", trap_oid="1.3",
                               name="n", severity="minor", action="raise", key="",
                               message="", varbinds="[]", unknown_sender=False)
                else:
                    row.update(channel="email", recipient="ops", state="sent", attempts=1)
                rows.append(row)
            c.execute(sa.insert(table), rows)


def count(engine, table, where=None) -> int:
    q = sa.select(sa.func.count()).select_from(table)
    with engine.connect() as c:
        return c.execute(q if where is None else q.where(where)).scalar_one()


def test_sqlite_deletes_old_rows_in_batches_and_keeps_the_rest(sqlite):
    engine, schema, _ = sqlite
    fill(engine, schema, days=30)
    lines: list[str] = []
    keep = Retention(delete_batch=100)
    report = maintain(engine, schema, keep, now=NOW, progress=lines.append)
    cutoff = int(NOW * 1000) - 14 * DAY
    assert count(engine, schema.samples, schema.samples.c.ts < cutoff) == 0
    # Rows at 00:00:00.001: days 0 to 14 are within 14 days, each of their rows kept.
    assert count(engine, schema.samples) == 15 * 3 * 40
    assert report.deleted[schema.samples.name] == 15 * 3 * 40
    assert count(engine, schema.samples_text, schema.samples_text.c.ts < cutoff) == 0
    assert count(engine, schema.samples_text) == 15 * 3
    assert report.deleted[schema.samples_text.name] == 15 * 3
    assert report.created == [] and report.dropped == []
    # events: every 5th day for 400 days; 90 days kept (days 0 to 90 by 5: exactly 90
    # days old is not older than 90 days).
    assert count(engine, schema.events) == 19
    assert count(engine, schema.notifications) == 74  # 365 days: days 0 to 365
    assert f"{schema.samples.name}: 1800 rows older than 14d deleted" in lines
    again = maintain(engine, schema, keep, now=NOW)
    assert set(again.deleted.values()) == {0}


def test_sqlite_has_no_partitions_to_make(sqlite):
    engine, schema, _ = sqlite
    assert ensure_partitions(engine, schema, Retention(), now=NOW) == []


def test_maintain_command_on_sqlite(sqlite, tmp_path):
    engine, schema, url = sqlite
    fill(engine, schema, days=20)
    ini = tmp_path / "settings.ini"
    ini.write_text(f"[database]\nurl = {url}\n[retention]\nsamples = 7d\n")
    r = subprocess.run([sys.executable, "-m", "centaure.cli", "db", "maintain", "-c", str(ini)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "samples: " in r.stdout and "rows older than 7d deleted" in r.stdout
    assert r.stdout.rstrip().splitlines()[-1].startswith("done in ")
    # The real clock is later than NOW: at most the newest days are left.
    assert count(engine, schema.samples) <= 7 * 3 * 40


def test_maintain_command_unreachable_database(tmp_path):
    ini = tmp_path / "settings.ini"
    ini.write_text("[database]\nurl = mysql+pymysql://u:s3cret@127.0.0.1:1/x\n")
    r = subprocess.run([sys.executable, "-m", "centaure.cli", "db", "maintain", "-c", str(ini)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("centaure db maintain: mysql+pymysql://u:***@127.0.0.1:1/x: ")
    assert "s3cret" not in r.stderr and len(r.stderr.splitlines()) == 1


def test_retention_settings_defaults_and_errors():
    s = settings_from_string("", source="settings.ini", environ={}).section("retention")
    r = Retention.from_settings(s)
    assert (r.samples, r.events, r.alarm_history, r.thresholds, r.notifications) == (
        14 * 86400, 90 * 86400, 365 * 86400, 90 * 86400, 365 * 86400)
    assert (r.partition_span, r.partitions_ahead, r.delete_batch) == (86400, 3 * 86400, 5000)
    s = settings_from_string("[retention]\npartition_span = 6h\nsamples = 2d\n",
                             source="settings.ini", environ={}).section("retention")
    assert (s.partition_span, s.samples) == (6 * 3600, 2 * 86400)
    with pytest.raises(SettingsError, match=r"\[retention\] partition_span = '90m': expected "
                                            "a whole number of hours"):
        settings_from_string("[retention]\npartition_span = 90m\n", source="settings.ini",
                             environ={})
    with pytest.raises(SettingsError, match=r"\[retention\] samples = '10m'"):
        settings_from_string("[retention]\nsamples = 10m\n", source="settings.ini", environ={})


def test_per_device_tables_lose_their_old_rows_in_batches(sqlite, tmp_path):
    """[db] layout = per_device: the registry's tables and per_device_tables, nothing else."""
    engine, _, url = sqlite
    now = int(time.time())
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE per_device_registry (table_name VARCHAR(64) PRIMARY KEY, "
                          "created BIGINT NOT NULL)")
        c.exec_driver_sql("INSERT INTO per_device_registry VALUES ('cpu_r1', 0)")
        for name in ("cpu_r1", "legacy_r2", "other"):
            c.exec_driver_sql(f"CREATE TABLE {name} (datetime INT, metric_index SMALLINT, "
                              "value VARCHAR(63))")
            c.exec_driver_sql(f"INSERT INTO {name} VALUES " + ", ".join(
                f"({now - h * 3600 - 1800}, 0, '{h}')" for h in range(0, 20 * 24)))
    ini = tmp_path / "settings.ini"
    ini.write_text(f"[database]\nurl = {url}\n[db]\nlayout = per_device\n"
                   "per_device_tables = legacy_r2\n[retention]\nsamples = 7d\ndelete_batch = 100\n")
    r = subprocess.run([sys.executable, "-m", "centaure.cli", "db", "maintain", "-c", str(ini)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    old = 20 * 24 - 7 * 24  # rows 168.5 to 479.5 hours old
    assert f"per_device: {2 * old} rows older than 7d deleted from 2 tables" in r.stdout
    with engine.connect() as c:
        def n(t):
            return c.exec_driver_sql(f"SELECT COUNT(*) FROM {t}").scalar()
        assert (n("cpu_r1"), n("legacy_r2"), n("other")) == (7 * 24, 7 * 24, 20 * 24)
