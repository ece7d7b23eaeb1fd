"""``centaure alarms`` listing and argument checks, on SQLite state written by the store."""

from __future__ import annotations

import json
import subprocess
import sys

import sqlalchemy as sa

from connector_alarms import migrate
from connector_alarms.keys import alarm_ref
from connector_alarms.model import AlarmRecord, HostState
from connector_alarms.store import StateStore
from tests.conftest import ROOT

TS = 1_790_000_000.0


def record(host: str, name: str, severity: str, active: bool = True, **kw) -> AlarmRecord:
    return AlarmRecord(ref=alarm_ref(host, name, ""), host=host, name=name, identity="",
                       origin="trap", severity=severity, base_severity=severity,
                       message=f"{name} on {host}", active=active, first_seen=TS,
                       last_seen=TS + 10, count=2, changed_ts=TS, **kw)


def state_db(tmp_path) -> str:
    url = f"sqlite:///{tmp_path}/c.sqlite3"
    engine = sa.create_engine(url)
    migrate.upgrade(engine, "corr_")
    store = StateStore(engine, "corr_")
    hosts = []
    for host, recs in {"r1": [record("r1", "linkDown", "major"),
                              record("r1", "coldStart", "info", active=False, cleared_at=TS + 5,
                                     clear_reason="expired")],
                       "r2": [record("r2", "fanFailure", "critical", acked_by="bob")]}.items():
        hs = HostState(host=host, alarms={r.ref: r for r in recs}, dirty=True)
        hosts.append(hs)
    store.save(store.snapshot(hosts))
    engine.dispose()
    (tmp_path / "settings.ini").write_text(f"[database]\nurl = {url}\n")
    return str(tmp_path / "settings.ini")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "centaure.cli", "alarms", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_lists_active_alarms_with_filters(tmp_path):
    ini = state_db(tmp_path)
    out = run("-c", ini)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["REF", "HOST", "NAME", "SEVERITY"]
    # Most recently seen first; only the active ones.
    assert {line.split()[2] for line in lines[1:-1]} == {"linkDown", "fanFailure"}
    assert lines[-1] == "2 active alarms"
    rows = json.loads(run("-c", ini, "--json", "--severity", "critical").stdout)
    assert [(r["host"], r["name"], r["acked_by"]) for r in rows] == [("r2", "fanFailure", "bob")]
    rows = json.loads(run("-c", ini, "--json", "--host", "r1", "--all").stdout)
    assert sorted((r["name"], r["active"], r["clear_reason"]) for r in rows) == [
        ("coldStart", False, "expired"), ("linkDown", True, None)]
    assert rows[0]["ref"] == alarm_ref("r1", rows[0]["name"], "")


def test_commands_check_their_arguments_before_touching_anything(tmp_path):
    ini = state_db(tmp_path)
    for args, expected in [
        (("ack", "-c", ini), "needs the REF"),
        (("ack", "12x", "--user", "a", "-c", ini), "needs the REF"),
        (("ack", str(2**64), "--user", "a", "-c", ini), "needs the REF"),
        (("ack", "12", "-c", ini), "no alarm with ref 12"),
        (("note", "12", "--user", "a", "-c", ini), "needs --note"),
        (("ack", "12", "--user", "a", "--host", "r1", "-c", ini), "are for listing"),
        (("ack", "12", "--user", "a", "-c", ini), "no alarm with ref 12"),
        (("clear", str(alarm_ref("r1", "coldStart", "")), "--user", "a", "-c", ini),
         "is not active"),
        (("list", "12", "-c", ini), "list takes no REF"),
    ]:
        out = run(*args)
        assert out.returncode == 1 and expected in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


def test_missing_tables_and_embedded_bus_say_what_to_do(tmp_path):
    (tmp_path / "settings.ini").write_text(f"[database]\nurl = sqlite:///{tmp_path}/e.sqlite3\n")
    sa.create_engine(f"sqlite:///{tmp_path}/e.sqlite3").connect().close()
    out = run("-c", str(tmp_path / "settings.ini"))
    assert out.returncode == 1 and "start centaure-correlator once" in out.stderr
    ini = state_db(tmp_path)  # [bus] url defaults to embedded: no broker to send to
    out = run("ack", str(alarm_ref("r1", "linkDown", "")), "--user", "a", "-c", ini)
    assert out.returncode != 0 and "embedded" in out.stderr


def test_acting_for_someone_else_is_only_for_a_trusted_service(tmp_path):
    ini = state_db(tmp_path)
    ref = str(alarm_ref("r1", "linkDown", ""))
    with open(ini, "a") as f:
        # Nothing listens there: the refusal comes before any connection.
        f.write("[bus]\nurl = amqp://ops1:pw@127.0.0.1:1/%2F\n")
    out = run("ack", ref, "--user", "alice", "-c", ini)
    assert out.returncode == 1
    assert "--user is only for a trusted service" in out.stderr
    assert "bus user 'ops1' is not in [correlator] command_services" in out.stderr
    assert "pw" not in out.stderr and "Traceback" not in out.stderr
