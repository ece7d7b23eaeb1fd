"""A device's graph in ``centaure-console`` reads the rollups for a long range (real daemon).

Real MariaDB: 31 days of a gauge polled every 10 minutes, written by the SQL
writer's store, rolled up by the writer's rollup builder (what ``centaure db
maintain`` runs). The console runs with ``anonymous_view``; the test reads the
device page as a browser does, then its data endpoint with the page's range.
What a user checks:

* ``last 30d``: hourly points, each the average, minimum and maximum of its
  hour's six samples, and the answer says so ("hourly averages, min–max band"),
  then the samples of the hours not rolled up yet, so that the graph reaches now;
* ``last 1h``: the raw samples of that hour, "raw samples";
* ``last 24h``: 5-minute points.
"""

from __future__ import annotations

import html
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict

import pytest
import sqlalchemy as sa

from centaure_shared.storage import alarms as alarm_tables
from centaure_shared.storage.schema import create_all, make_schema
from connector import messages
from connector.consumer import Delivery
from tests.conftest import MARIADB_URL, settings_text
from tests.integration.daemons import TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port
from tests.integration.support import declare_consumer_queues, sql_tables

pytestmark = pytest.mark.integration

HOST, METRIC = "sw-core", "cpuLoad"
EVERY = 600  # seconds between polls
DAYS = 31


def values_at(i: int) -> float:
    """The i-th sample's value, counted back from now: varies within every hour."""
    return float((i * 7) % 100)


@pytest.fixture
def stored(sql_tables):
    """31 days of ``cpuLoad`` of ``sw-core`` stored and rolled up; (tables, {ts: value})."""
    from connector_db.rollups import build
    from connector_db.store import NormalizedStore

    tables = sql_tables
    engine = sa.create_engine(MARIADB_URL)
    schema = make_schema(tables["db"])
    now = time.time()
    samples = {round(now - i * EVERY, 3): values_at(i) for i in range(DAYS * 86400 // EVERY)}
    try:
        create_all(engine, schema)
        alarm_tables.create_all(engine, alarm_tables.make_schema(tables["correlator"]))
        store = NormalizedStore(engine, schema)
        items = [store.prepare(messages.Perf(
            source="snmp@testnode", ts=ts, host=HOST, address="127.0.0.1", device_type="switch",
            metrics=[messages.Metric(name=METRIC, value=v, kind="gauge", unit="%",
                                     oid="1.3.6.1.2.1.25.3.3.1.2.1")]),
            Delivery(b"", "x", f"perf.{HOST}", message_id=f"p{n}"))
            for n, (ts, v) in enumerate(sorted(samples.items()))]
        for i in range(0, len(items), 500):
            store.write(items[i:i + 500])
        build(engine, schema, int(now * 1000))
        yield tables, samples
    finally:
        engine.dispose()


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def graph_of(port: int, span: str) -> dict:
    """The device page for ``span``, then its data endpoint with the page's own range."""
    status, page = get(port, f"/device?host={HOST}&metric={METRIC}&range={span}")
    assert status == 200, page
    assert f'<option value="{span}" selected>' in page, page
    graph = re.search(r'<div id="graph"[^>]*>', page).group(0)
    attrs = {k: html.unescape(v) for k, v in re.findall(r'data-(\w+)="([^"]*)"', graph)}
    query = urllib.parse.urlencode({k: attrs[k] for k in ("host", "metric", "index", "start",
                                                          "end")})
    status, body = get(port, f"/api/samples?{query}")
    assert status == 200, body
    return dict(json.loads(body), start=float(attrs["start"]), end=float(attrs["end"]))


def test_a_long_range_draws_hourly_rollups_and_says_so(tmp_path, prefix, stored):
    tables, samples = stored
    port = free_tcp_port()
    ini = tmp_path / "console.ini"
    ini.write_text(settings_text(
        prefix, tmp_path, database={"url": MARIADB_URL}, db={"table_prefix": tables["db"]},
        correlator={"table_prefix": tables["correlator"]},
        console={"port": str(port), "users_file": "users.yaml", "anonymous_view": "true"}))
    (tmp_path / "users.yaml").write_text("users: {}\n")
    (tmp_path / "users.yaml").chmod(0o600)
    declare_consumer_queues(prefix, "console")
    daemon = TwistdDaemon("centaure-console", ini)
    try:
        daemon.wait_log("alarm board loaded")
        month, hour, day = graph_of(port, "30d"), graph_of(port, "1h"), graph_of(port, "24h")
    finally:
        daemon.stop()

    # 30 days: one point an hour, each its hour's average, minimum and maximum, then the
    # samples of the hours not rolled up yet, as they are (no band).
    assert month["resolution"] == "1h", month
    rolled = sum(1 for ts in month["ts"] if month["raw_from"] is None or ts < month["raw_from"])
    tail = len(month["ts"]) - rolled
    assert month["label"] == "hourly averages, min–max band" + (
        f"; raw samples from {time.strftime('%Y-%m-%d %H:%M', time.gmtime(month['raw_from']))}"
        " UTC (not rolled up yet)" if tail else "")
    assert month["summary"] == f"{rolled} hourly averages" + (f" and {tail} samples" if tail
                                                               else "")
    by_hour: dict[float, list[float]] = defaultdict(list)
    for ts, v in samples.items():
        by_hour[ts // 3600 * 3600].append(v)
    # 720 hours, less the one the range starts in and the ones not closed yet.
    assert 717 <= rolled <= 720, rolled
    assert month["ts"] == sorted(month["ts"])
    assert all(month["start"] <= ts <= month["end"] for ts in month["ts"])
    for ts, avg, low, high in zip(month["ts"][:rolled], month["values"], month["min"],
                                  month["max"]):
        want = by_hour[ts]
        assert ts % 3600 == 0 and len(want) == 6
        assert (low, high) == (min(want), max(want)), ts
        assert avg == pytest.approx(sum(want) / 6), ts
        assert low < avg < high
    after = month["ts"][rolled - 1] + 3600
    want = sorted(ts for ts in samples if after <= ts <= month["end"])
    assert month["ts"][rolled:] == pytest.approx(want, abs=0.001)
    assert month["values"][rolled:] == [samples[ts] for ts in want]
    assert month["min"][rolled:] == month["max"][rolled:] == [None] * len(want)
    assert month["raw_from"] == (after if want else None)

    # 1 hour: the raw samples of that hour, as stored.
    assert hour["resolution"] == "raw" and hour["label"] == "raw samples", hour
    assert "min" not in hour
    want = sorted(ts for ts in samples if hour["start"] <= ts <= hour["end"])
    assert len(want) in (6, 7) and hour["summary"] == f"{len(want)} samples"
    assert hour["ts"] == pytest.approx(want, abs=0.001)
    assert hour["values"] == [samples[ts] for ts in want]

    # 24 hours: 5-minute rollups (one sample each, every other interval), reaching the end.
    assert day["resolution"] == "5m"
    assert day["label"].startswith("5-minute averages, min–max band")
    fives = [ts for ts, low in zip(day["ts"], day["min"]) if low is not None]
    assert 142 <= len(fives) <= 144 and all(ts % 300 == 0 for ts in fives)
    assert day["end"] - day["ts"][-1] <= EVERY
