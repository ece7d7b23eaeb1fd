"""Rollups of samples on the real MariaDB and PostgreSQL (and SQLite): equal to SQL's aggregates.

The expected 5-minute and hourly rows are computed by the database itself
(GROUP BY, and LAG() over the raw rows for a counter's rates, a 32-bit wrap
included), not by the code under test.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from connector_db import migrate
from connector_db.maintain import Retention, maintain
from connector_db.rollups import build
from centaure_shared.storage.schema import make_schema
from tests.conftest import SQL_URLS
from tests.sql_samples import insert_samples
from tests.unit.test_db_migrate import prefixed_engine

pytestmark = pytest.mark.integration

HOUR = 3_600_000
START = 1_796_515_200_000  # a UTC midnight
STEP = 30_000  # a poll every 30 s


@pytest.fixture(params=sorted(SQL_URLS) + ["sqlite"])
def db(request, tmp_path):
    url = f"sqlite:///{tmp_path}/r.sqlite3" if request.param == "sqlite" else SQL_URLS[request.param]
    with prefixed_engine(url) as (engine, p):
        migrate.upgrade(engine, p)
        yield engine, make_schema(p)


def fill(engine, schema) -> None:
    """3 hours of a gauge (two indexes) and a counter wrapping at 2**32, for two devices."""
    rnd = random.Random(7)
    rows = []
    for device in (1, 2):
        counter = 2**32 - 5_000_000 * device
        for i in range(3 * HOUR // STEP):
            ts = START + i * STEP + rnd.randrange(0, 2000)  # polls drift a little
            for idx in ("1", "2"):
                rows.append({"device_id": device, "metric_id": 1, "idx": idx, "ts": ts,
                             "value_num": round(rnd.uniform(0, 100), 3), "value_text": None})
            counter = (counter + rnd.randrange(10_000, 200_000)) % 2**32
            rows.append({"device_id": device, "metric_id": 2, "idx": "", "ts": ts,
                         "value_num": float(counter), "value_text": None})
    with engine.begin() as c:
        c.execute(sa.insert(schema.devices), [{"id": 1, "name": "r1"}, {"id": 2, "name": "r2"}])
        c.execute(sa.insert(schema.metrics), [
            {"id": 1, "name": "cpu", "kind": "gauge"}, {"id": 2, "name": "ifInOctets",
                                                        "kind": "counter"}])
        insert_samples(c, schema, rows)


def expected(engine, schema, step: int) -> dict:
    """(device, metric, idx, interval) -> (min, max, avg, count, last) by SQL."""
    # The raw rows with their series' device, metric and index.
    s = (f"(SELECT se.device_id, se.metric_id, se.idx, s.ts, s.value AS value_num "
         f"FROM {schema.samples.name} s JOIN {schema.series.name} se ON se.id = s.series_id) w")
    # Gauges as they are; a counter's rates from LAG(), 2**32 added when it went down.
    values = f"""
        SELECT device_id, metric_id, idx, ts, value_num AS v FROM {s} WHERE metric_id = 1
        UNION ALL
        SELECT device_id, metric_id, idx, ts,
               (CASE WHEN value_num >= prev THEN value_num - prev
                     ELSE value_num - prev + 4294967296 END) / ((ts - prev_ts) / 1000.0) AS v
        FROM (SELECT device_id, metric_id, idx, ts, value_num,
                     LAG(value_num) OVER (PARTITION BY device_id, metric_id, idx ORDER BY ts)
                         AS prev,
                     LAG(ts) OVER (PARTITION BY device_id, metric_id, idx ORDER BY ts) AS prev_ts
              FROM {s} WHERE metric_id = 2) r
        WHERE prev IS NOT NULL"""
    sql = f"""
        SELECT a.device_id, a.metric_id, a.idx, a.b, a.mn, a.mx, a.av, a.n, l.v
        FROM (SELECT device_id, metric_id, idx, ts - (ts % {step}) AS b, MIN(v) AS mn,
                     MAX(v) AS mx, AVG(v) AS av, COUNT(*) AS n, MAX(ts) AS last_ts
              FROM ({values}) x GROUP BY device_id, metric_id, idx, ts - (ts % {step})) a
        JOIN ({values}) l ON l.device_id = a.device_id AND l.metric_id = a.metric_id
             AND l.idx = a.idx AND l.ts = a.last_ts"""
    with engine.connect() as c:
        return {(d, m, i, int(b)): (float(mn), float(mx), float(av), int(n), float(v))
                for d, m, i, b, mn, mx, av, n, v in c.execute(sa.text(sql))}


def stored(engine, table) -> dict:
    """The rows of a rollup table by (device, metric, index, interval)."""
    se = make_schema(table.name[:-len("rollups_5m")]).series
    with engine.connect() as c:
        return {(r.device_id, r.metric_id, r.idx, r.ts): (r.min_value, r.max_value, r.avg_value,
                                                          r.value_count, r.last_value)
                for r in c.execute(sa.select(se.c.device_id, se.c.metric_id, se.c.idx, table)
                                   .join_from(table, se, se.c.id == table.c.series_id))}


def assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for key, (mn, mx, av, n, last) in want.items():
        g = got[key]
        assert g[3] == n, key
        for a, b in zip((g[0], g[1], g[2], g[4]), (mn, mx, av, last)):
            assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (key, g, (mn, mx, av, n, last))


def test_rollups_equal_the_sql_aggregates_of_the_raw_rows(db):
    engine, schema = db
    fill(engine, schema)
    now = START + 3 * HOUR + 10 * 60_000
    written = build(engine, schema, now)
    assert written["5m"] == len(stored(engine, schema.rollups_5m)) > 0
    assert_same(stored(engine, schema.rollups_5m), expected(engine, schema, 300_000))
    assert_same(stored(engine, schema.rollups_1h), expected(engine, schema, HOUR))
    # A counter's rates are positive across its wrap (2**32).
    rates = [v for k, v in stored(engine, schema.rollups_5m).items() if k[1] == 2]
    assert rates and min(r[0] for r in rates) > 0
    # Idempotent: nothing left to build, the rows unchanged.
    before = stored(engine, schema.rollups_5m)
    assert build(engine, schema, now) == {"5m": 0, "1h": 0}
    assert stored(engine, schema.rollups_5m) == before


def test_maintain_rolls_up_before_the_raw_rows_go(db):
    engine, schema = db
    fill(engine, schema)
    now = (START + 20 * 86_400_000) / 1000  # the raw rows are 20 days old: dropped
    report = maintain(engine, schema, Retention(lock_timeout=30.0), now=now)
    assert report.rolled_up["5m"] > 0 and report.rolled_up["1h"] > 0
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(schema.samples)).scalar() == 0
    assert len(stored(engine, schema.rollups_1h)) == 3 * 2 * 3  # 3 hours, 3 series, 2 devices


def query_cli(tmp_path, engine, schema, *args) -> subprocess.CompletedProcess:
    ini = tmp_path / "query.ini"
    url = engine.url.render_as_string(hide_password=False)
    ini.write_text(f"[database]\nurl = {url}\n[db]\ntable_prefix = {schema.prefix}\n")
    return subprocess.run([sys.executable, "-m", "centaure.cli", "query", "-c", str(ini), *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_query_reads_raw_rows_for_an_hour_and_hourly_rollups_for_30_days(db, tmp_path):
    engine, schema = db
    now = int(time.time() * 1000)
    every = 600_000  # a sample every 10 minutes for 31 days
    with engine.begin() as c:
        c.execute(sa.insert(schema.devices), [{"id": 1, "name": "r1"}])
        c.execute(sa.insert(schema.metrics), [{"id": 1, "name": "cpu", "kind": "gauge"}])
        insert_samples(c, schema, [
            {"device_id": 1, "metric_id": 1, "idx": "", "ts": now - i * every,
             "value_num": float(i % 100), "value_text": None} for i in range(31 * 144)])
    maintain(engine, schema, Retention(samples=60 * 86400.0, lock_timeout=30.0),
             now=now / 1000)

    r = query_cli(tmp_path, engine, schema, "r1", "cpu", "--since", "1h")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["TIME", "METRIC", "INDEX", "VALUE", "UNIT"]
    assert lines[-1] == f"{len(lines) - 2} samples (newest first)" and len(lines) - 2 in (6, 7)

    r = query_cli(tmp_path, engine, schema, "r1", "cpu", "--since", "30d", "--limit", "1000")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["TIME", "METRIC", "INDEX", "MIN", "MAX", "AVG", "COUNT", "LAST",
                                "UNIT"]
    # 720 hours, give or take the hour in progress and the one not closed yet.
    assert 718 <= len(lines) - 2 <= 721
    assert lines[-1] == (f"{len(lines) - 2} hourly rollups (newest first); hourly rollups "
                         "(resolution 1h, auto)")
    counts = {int(line.split()[-3]) for line in lines[2:-2]}
    assert counts == {6}  # six samples in every full hour

    r = query_cli(tmp_path, engine, schema, "r1", "cpu", "--since", "2d", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows and {row["resolution"] for row in rows} == {"5m"}
    assert r.stderr == "centaure query: 5-minute rollups (resolution 5m, auto)\n"

    r = query_cli(tmp_path, engine, schema, "r1", "cpu", "--since", "30d", "--resolution", "raw",
                  "--limit", "5")
    assert r.returncode == 0 and r.stdout.splitlines()[0].split()[-2] == "VALUE"

    r = query_cli(tmp_path, engine, schema, "r1", "cpu", "--resolution", "2h")
    assert r.returncode == 1
    assert r.stderr == ("centaure query: --resolution '2h': expected raw, 5m, 1h or auto\n")
