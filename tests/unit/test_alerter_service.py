"""centaure-alerter in one process with the correlator and the writer (embedded bus, SQLite).

A value crossing a rule's threshold becomes a ``threshold`` message, the
correlator turns it into an alarm (origin ``threshold``), the writer stores
both; the value coming back under the threshold clears it. A restart
rebuilds the windows from the stored samples without repeating the breach.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest_twisted
import sqlalchemy as sa
from twisted.internet import reactor, task

from connector import messages
from connector.service import makeService
from connector.settings import settings_from_string

TS = time.time() - 600  # recent: start-up reads the last hour of samples
RULES = """\
- name: cpu-high
  when: {metric: cpuLoad, op: '>', value: 90, consecutive: 2}
"""


def perf(i: int, cpu: float) -> messages.Perf:
    return messages.Perf(ts=TS + i, source="snmp@n1", host="r1", address="10.0.0.1",
                         device_type="router",
                         metrics=[messages.Metric(name="cpuLoad", value=cpu, kind="gauge",
                                                  oid="1.3.6.1.4.1.1")])


def make(tmp_path, connectors=("db", "correlator", "alerter"), db: str = ""):
    """The connectors in one process; ``db``: more ``[db]`` lines."""
    settings = settings_from_string(
        f"[bus]\nurl = embedded\n\n[buffer]\npath = {tmp_path}/b-{{connector}}.sqlite3\n\n"
        f"[connector]\nhttp_port = 0\n\n[database]\nurl = sqlite:///{tmp_path}/c.sqlite3\n\n"
        f"[db]\nbatch_interval = 10ms\n{db}\n[correlator]\nbatch_interval = 10ms\n"
        "update_interval = 0\n\n[alerter]\nrules = rules.yaml\n",
        source=str(tmp_path / "settings.ini"))
    return makeService({"settings": settings}, list(connectors), "all")


async def until(predicate, what: str, timeout: float = 20.0):
    for _ in range(int(timeout / 0.02)):
        value = predicate()
        if value:
            return value
        await task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


def rows(tmp_path, sql: str) -> list[tuple]:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/c.sqlite3")
    try:
        with engine.connect() as c:
            return [tuple(r) for r in c.execute(sa.text(sql))]
    except sa.exc.OperationalError:
        return []
    finally:
        engine.dispose()


def ready(root) -> bool:
    health = root.runtime.health()["connectors"]
    return all(health[c].get("state", "ready") == "ready" or health[c].get("schema") == "ready"
               for c in ("alerter", "correlator")) and health["db"].get("schema") == "ready"


@pytest_twisted.ensureDeferred
async def test_breach_becomes_an_alarm_and_recovery_clears_it(tmp_path):
    (tmp_path / "rules.yaml").write_text(RULES)
    root = make(tmp_path)
    publisher = root.runtime.bus.publisher("snmp")
    root.startService()
    try:
        await until(lambda: ready(root), "every connector ready")
        await publisher.publish(perf(0, 95.0))       # one value over: not yet (2 in a row)
        await publisher.publish(perf(1, 50.0))
        await publisher.publish(perf(2, 96.0))
        await until(lambda: rows(tmp_path, "SELECT COUNT(*) FROM samples") == [(3,)], "3 samples")
        assert rows(tmp_path, "SELECT COUNT(*) FROM thresholds") == [(0,)]
        await publisher.publish(perf(3, 97.0))       # two in a row: breached
        await until(lambda: rows(tmp_path, "SELECT host, rule, state FROM thresholds")
                    == [("r1", "cpu-high", "breached")], "the breach")
        await until(lambda: rows(tmp_path, "SELECT name, origin, state FROM alarms")
                    == [("cpu-high", "threshold", "raised")], "the alarm")
        await publisher.publish(perf(4, 40.0))
        await until(lambda: rows(tmp_path, "SELECT state FROM alarms") == [("cleared",)],
                    "the alarm cleared")
        await publisher.publish(perf(5, 98.0))       # one over again, then a restart
    finally:
        await root.stopService()
    root = make(tmp_path)
    publisher = root.runtime.bus.publisher("snmp")
    root.startService()
    try:
        await until(lambda: ready(root), "every connector ready again")
        # The window holds the stored 98 from before the restart: one more value breaches.
        await publisher.publish(perf(6, 99.0))
        await until(lambda: len(rows(tmp_path, "SELECT id FROM thresholds")) == 3, "a new breach")
        assert [r[0] for r in rows(tmp_path, "SELECT state FROM thresholds ORDER BY ts")] == [
            "breached", "recovered", "breached"]
    finally:
        await root.stopService()


@pytest_twisted.ensureDeferred
async def test_breach_to_email_through_correlator_and_notifier(tmp_path):
    """The whole alerting chain in one process, to a real (in-process) SMTP server."""
    from tests.smtpserver import SmtpServer

    smtp = SmtpServer()
    smtp.start()
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "alert-routes.yaml").write_text(
        "routes:\n  - name: all\n    group_wait: 0s\n    email: [noc@example.com]\n")
    settings = settings_from_string(
        f"[bus]\nurl = embedded\n\n[buffer]\npath = {tmp_path}/b-{{connector}}.sqlite3\n\n"
        f"[connector]\nhttp_port = 0\n\n[database]\nurl = sqlite:///{tmp_path}/c.sqlite3\n\n"
        "[db]\nbatch_interval = 10ms\n\n[correlator]\nbatch_interval = 10ms\n\n"
        f"[smtp]\nport = {smtp.port}\nstarttls = never\nsender = centaure@example.com\n",
        source=str(tmp_path / "settings.ini"))
    root = makeService({"settings": settings}, ["db", "correlator", "alerter"], "all")
    publisher = root.runtime.bus.publisher("snmp")
    root.startService()
    try:
        await until(lambda: ready(root), "every connector ready")
        sent_at = time.monotonic()
        for i, cpu in enumerate((95.0, 97.0)):
            await publisher.publish(perf(i, cpu))
        await until(lambda: smtp.inbox, "the email", timeout=30)
        latency = time.monotonic() - sent_at
        (mail,) = smtp.inbox
        assert mail["To"] == "noc@example.com" and mail["From"] == "centaure@example.com"
        assert "cpu-high" in mail["Subject"] and "r1" in mail["Subject"]
        assert latency < 10, latency
        # Every attempt is on the ledger the writer stores.
        await until(lambda: rows(tmp_path, "SELECT channel, recipient, state FROM notifications")
                    == [("email", "noc@example.com", "sent")], "the notification record")
        # ... and 'centaure query --notifications' shows it.
        (tmp_path / "query.ini").write_text(f"[database]\nurl = sqlite:///{tmp_path}/c.sqlite3\n")
        out = subprocess.run([sys.executable, "-m", "centaure.cli", "query", "--notifications",
                              "--json", "-c", str(tmp_path / "query.ini")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        (ledger,) = json.loads(out.stdout)
        assert (ledger["host"], ledger["channel"], ledger["state"], ledger["attempts"]) == (
            "r1", "email", "sent", 1)
    finally:
        await root.stopService()
        await smtp.stop()
