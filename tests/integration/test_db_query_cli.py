"""``centaure query`` as a subprocess against the real MariaDB of this machine.

Each test fills its own tables (unique prefix in database ``test``) through
the real SqlWriter, writes a settings file, runs the command and drops every
table afterwards.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor

from connector.consumer import Delivery
from connector.messages import Alarm, Event, Metric, Perf, Varbind
from centaure_shared.storage.schema import create_all, drop_all, make_schema
from connector_db.store import NormalizedStore
from connector_db.writer import SqlWriter

pytestmark = pytest.mark.integration

URL = os.environ.get("CENTAURE_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
R1, R2 = "r1.example.net", "r2.example.net"
MAX_REF = 2**64 - 1
# A recent time with milliseconds, so that --since sees some samples and not others.
NOW = math.floor(time.time()) - 1 + 0.25


def iso(ts: float) -> str:
    ms = round(ts * 1000)
    return datetime.fromtimestamp(ms // 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") \
        + f".{ms % 1000:03d}Z"


@pytest.fixture
def db():
    engine = sa.create_engine(URL)
    schema = make_schema(f"t{uuid.uuid4().hex[:10]}_")
    create_all(engine, schema)
    try:
        yield engine, schema
    finally:
        drop_all(engine, schema)
        with engine.connect() as c:
            left = [n for n in sa.inspect(c).get_table_names() if n.startswith(schema.prefix)]
        engine.dispose()
        assert not left, left


def poll(host: str, ts: float, k: int) -> Perf:
    return Perf(ts=ts, source="centaure-snmp@n1", host=host, address="10.0.0.1",
                device_type="router", metrics=[
                    Metric(name="cpu", value=10.0 + k, kind="gauge", unit="%", oid="1.1"),
                    Metric(name="ifInOctets", index="1", value=1000 * k, kind="counter",
                           unit="octets", oid="1.2.1"),
                    Metric(name="ifInOctets", index="2", value=2000 * k + 0.5, kind="counter",
                           unit="octets", oid="1.2.2"),
                    Metric(name="sysDescr", value=f"IOS, v{k}", kind="text", oid="1.3")])


def event(ts: float, host: str, name: str) -> Event:
    return Event(ts=ts, source="centaure-traps@n1", host=host, address="10.0.0.1",
                 snmp_version="v2c", trap_oid="1.3.6.1.6.3.1.1.5.3", name=name,
                 severity="major", message=f"{name} on {host}", action="raise", alarm=name,
                 key="3", varbinds=[Varbind(oid="1.3.6.1.2.1.2.2.1.1.3", type="Integer",
                                            value=3)])


def alarm(ref: int, host: str, name: str, state: str, last_seen: float) -> Alarm:
    return Alarm(ts=last_seen, source="centaure-correlator@n1", host=host, ref=ref, name=name,
                 severity="critical" if ref == MAX_REF else "major", state=state,
                 message=f"{name} {state}", first_seen=NOW - 7200, last_seen=last_seen,
                 cleared_at=last_seen if state == "cleared" else None, count=3, origin="trap")


async def fill(db) -> None:
    """r1 polled 2h, 30 min and 1 min ago; r2 5 min ago; events; alarms."""
    messages = [poll(R1, NOW - 7200, 0), poll(R1, NOW - 1800, 1), poll(R1, NOW - 60, 2),
                poll(R2, NOW - 300, 5),
                event(NOW - 600, R1, "linkDown"), event(NOW - 500, R1, "linkUp"),
                event(NOW - 400, R2, "coldStart"),
                alarm(1, R1, "linkDown", "raised", NOW - 600),
                alarm(2, R1, "fanFail", "cleared", NOW - 200),
                alarm(MAX_REF, R2, "onBattery", "updated", NOW - 100)]
    w = SqlWriter(NormalizedStore(*db), reactor, batch_interval=0.01)
    try:
        await defer.gatherResults(
            [w.handle(msg, Delivery(body=b"", exchange="x", routing_key="k",
                                    message_id=f"m{i}")) for i, msg in enumerate(messages)],
            consumeErrors=True)
        await w.close()
    finally:
        w.stop_pool()


def settings_file(tmp_path, prefix: str, url: str = URL, extra: str = "") -> str:
    path = tmp_path / "settings.ini"
    path.write_text(f"[database]\nurl = {url}\n\n[db]\ntable_prefix = {prefix}\n{extra}")
    return str(path)


def centaure_query(settings: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "centaure.cli", "query", "-c", settings,
                           *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return r.stdout


def failed(r: subprocess.CompletedProcess) -> str:
    """The one stderr line of a failed run."""
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr  # one line, no traceback
    return lines[0]


@pytest_twisted.ensureDeferred
async def test_table_of_samples(db, tmp_path):
    await fill(db)
    cfg = settings_file(tmp_path, db[1].prefix)
    out = ok(centaure_query(cfg, R1, "cpu", "--since", "1h"))
    assert out.splitlines() == [
        "TIME                      METRIC  INDEX  VALUE  UNIT",
        f"{iso(NOW - 60)}  cpu            12     %",
        f"{iso(NOW - 1800)}  cpu            11     %",
        "2 samples (newest first)",
    ]
    out = ok(centaure_query(cfg, R1, "--since", "3h", "--order", "asc", "--limit", "5"))
    lines = out.splitlines()
    assert lines[0].split() == ["TIME", "METRIC", "INDEX", "VALUE", "UNIT"]
    assert [line.split()[:4] for line in lines[1:6]] == [
        [iso(NOW - 7200), "cpu", "10", "%"],
        [iso(NOW - 7200), "ifInOctets", "1", "0"],
        [iso(NOW - 7200), "ifInOctets", "2", "0.5"],
        [iso(NOW - 7200), "sysDescr", "IOS,", "v0"],
        [iso(NOW - 1800), "cpu", "11", "%"],
    ]
    assert lines[6] == "5 samples (oldest first); --limit 5 reached, there may be more"
    assert len(lines) == 7


@pytest_twisted.ensureDeferred
async def test_empty_result_says_what_was_asked(db, tmp_path):
    await fill(db)
    cfg = settings_file(tmp_path, db[1].prefix)
    assert ok(centaure_query(cfg, R2, "cpu", "--since", "1m")) == \
        f"no samples for {R2} cpu in the last 1m\n"
    assert ok(centaure_query(cfg, R1, "ifInOctets", "--index", "7")) == \
        f"no samples for {R1} ifInOctets index 7\n"
    assert ok(centaure_query(cfg, R2, "--json", "--since", "1m")) == "[]\n"


@pytest_twisted.ensureDeferred
async def test_json_of_samples_in_a_range(db, tmp_path):
    await fill(db)
    cfg = settings_file(tmp_path, db[1].prefix)
    # --from as ISO 8601 (naive: UTC), --to as UNIX seconds; both inclusive.
    start = datetime.fromtimestamp(NOW - 7200, timezone.utc).replace(tzinfo=None).isoformat()
    out = ok(centaure_query(cfg, R1, "ifInOctets", "--index", "2", "--from", start,
                            "--to", repr(NOW - 1800), "--json"))
    assert json.loads(out) == [
        {"host": R1, "metric": "ifInOctets", "kind": "counter", "unit": "octets",
         "index": "2", "ts": iso(NOW - 1800), "value": 2000.5},
        {"host": R1, "metric": "ifInOctets", "kind": "counter", "unit": "octets",
         "index": "2", "ts": iso(NOW - 7200), "value": 0.5},
    ]


@pytest_twisted.ensureDeferred
async def test_csv_of_samples(db, tmp_path):
    await fill(db)
    cfg = settings_file(tmp_path, db[1].prefix)
    out = ok(centaure_query(cfg, R1, "sysDescr", "--csv", "--limit", "2"))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows == [
        {"host": R1, "metric": "sysDescr", "kind": "text", "unit": "", "index": "",
         "ts": iso(NOW - 60), "value": "IOS, v2"},
        {"host": R1, "metric": "sysDescr", "kind": "text", "unit": "", "index": "",
         "ts": iso(NOW - 1800), "value": "IOS, v1"},
    ]


@pytest_twisted.ensureDeferred
async def test_events(db, tmp_path):
    await fill(db)
    cfg = settings_file(tmp_path, db[1].prefix)
    lines = ok(centaure_query(cfg, "--events")).splitlines()
    assert lines[0].split() == ["TIME", "HOST", "ADDRESS", "SEVERITY", "ACTION", "NAME",
                                "MESSAGE"]
    assert [line.split()[:6] for line in lines[1:4]] == [
        [iso(NOW - 400), R2, "10.0.0.1", "major", "raise", "coldStart"],
        [iso(NOW - 500), R1, "10.0.0.1", "major", "raise", "linkUp"],
        [iso(NOW - 600), R1, "10.0.0.1", "major", "raise", "linkDown"],
    ]
    assert lines[4] == "3 events (newest first)"
    events = json.loads(ok(centaure_query(cfg, "--events", R1, "--order", "asc", "--json")))
    assert [(e["ts"], e["name"]) for e in events] == [(iso(NOW - 600), "linkDown"),
                                                      (iso(NOW - 500), "linkUp")]
    assert events[0]["varbinds"] == [{"oid": "1.3.6.1.2.1.2.2.1.1.3", "name": None,
                                      "type": "Integer", "value": 3}]
    assert ok(centaure_query(cfg, "--events", R2, "--since", "1m")) == \
        f"no events for {R2} in the last 1m\n"


@pytest_twisted.ensureDeferred
async def test_active_alarms(db, tmp_path):
    await fill(db)
    cfg = settings_file(tmp_path, db[1].prefix)
    lines = ok(centaure_query(cfg, "--alarms", "--active")).splitlines()
    assert lines[0].split() == ["REF", "HOST", "SEVERITY", "STATE", "NAME", "COUNT", "FIRST",
                                "SEEN", "LAST", "SEEN", "ACKED", "BY", "MESSAGE"]
    assert [line.split()[:8] for line in lines[1:3]] == [
        [str(MAX_REF), R2, "critical", "updated", "onBattery", "3", iso(NOW - 7200),
         iso(NOW - 100)],
        ["1", R1, "major", "raised", "linkDown", "3", iso(NOW - 7200), iso(NOW - 600)],
    ]
    assert lines[3] == "2 active alarms (most recently seen first)"
    rows = list(csv.DictReader(io.StringIO(ok(centaure_query(cfg, "--alarms", R1, "--csv")))))
    assert [(r["ref"], r["state"], r["cleared_at"], r["flapping"]) for r in rows] == [
        ("2", "cleared", iso(NOW - 200), "false"), ("1", "raised", "", "false")]
    assert ok(centaure_query(cfg, "--alarms", "--active", R1, "--json")) != "[]\n"
    assert ok(centaure_query(cfg, "--alarms", "--active", "--limit", "1")).splitlines()[-1] \
        == "1 active alarm (most recently seen first); --limit 1 reached, there may be more"


@pytest_twisted.ensureDeferred
async def test_unknown_host_and_metric_suggest_the_right_names(db, tmp_path):
    await fill(db)
    cfg = settings_file(tmp_path, db[1].prefix)
    assert failed(centaure_query(cfg, "r1.exmple.net", "cpu")) == (
        "centaure query: no device named 'r1.exmple.net' in the database "
        f"(did you mean '{R1}'?); known: {R1}, {R2}")
    assert failed(centaure_query(cfg, R1, "ifInOctet")) == (
        f"centaure query: device '{R1}' has no metric 'ifInOctet' (did you mean "
        "'ifInOctets'?); its metrics: cpu, ifInOctets, sysDescr")
    assert failed(centaure_query(cfg, "--alarms", "r3.example.net")).startswith(
        "centaure query: no device named 'r3.example.net' in the database (did you mean")


def test_bad_option_combinations(tmp_path):
    cfg = settings_file(tmp_path, "nope_")  # never connects: the options are checked first
    cases = {
        ("--active",): "--active only applies to --alarms",
        (R1, "--since", "1h", "--from", "2026-11-23"):
            "--since cannot be combined with --from/--to: give one or the other",
        (): "a HOST is required for samples (or use --events or --alarms)",
        (R1, "--order", "up"): "--order 'up': expected asc (oldest first) or desc (newest first)",
        (R1, "--limit", "0"): "--limit '0': expected a whole number of at least 1",
        (R1, "--from", "2026-11-23T11:00Z", "--to", "2026-11-23T10:00Z"):
            "--from 2026-11-23T11:00:00.000Z is after --to 2026-11-23T10:00:00.000Z",
        ("--events", "--alarms"): "--events, --alarms and --notifications cannot be combined: choose one",
    }
    for args, message in cases.items():
        assert failed(centaure_query(cfg, *args)) == f"centaure query: {message}", args


def test_missing_tables_and_per_device_layout(tmp_path):
    cfg = settings_file(tmp_path, "nope_")
    assert failed(centaure_query(cfg, "--events")) == (
        f"centaure query: no Centaure tables with prefix 'nope_' in {URL}: run "
        "'centaure db upgrade -c settings.ini' or start centaure-db")
    cfg = settings_file(tmp_path, "nope_", extra="layout = per_device\n")
    # The per_device layout reads the device's own tables: none here.
    assert failed(centaure_query(cfg, R1)) == (
        f"centaure query: no device named '{R1}' in the database: no per_device table of it "
        f"(named like METRIC_{R1})")


def test_unreachable_database_never_shows_the_password(tmp_path):
    url = "mysql+pymysql://centaure:Sup3r-S3cret@127.0.0.1:1/test"  # nothing listens on port 1
    r = centaure_query(settings_file(tmp_path, "", url=url), R1)
    line = failed(r)
    assert "Sup3r-S3cret" not in r.stderr + r.stdout
    assert line.startswith("centaure query: cannot query "
                           "mysql+pymysql://centaure:***@127.0.0.1:1/test: (2003, ")
