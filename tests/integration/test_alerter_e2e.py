"""The alerting chain with real daemons: a device's value crosses a threshold, a mail arrives.

Parts, all real and in their own processes except the mail server:

* a simulated Eltek-style power shelf (snmpsim serving ``fleet/eltek01.snmprec``
  with the battery temperature the test sets; the file is rewritten in place
  and snmpsim sees the new modification time, as in :mod:`tests.snmp.alarmtable`);
* ``twistd centaure-snmp`` polls it every second (profile ``eltek-smartpack``)
  and publishes ``perf`` on the real RabbitMQ;
* ``twistd centaure-alerter`` evaluates the rule ``battery-hot``
  (``batteryTemperature > 40``) and publishes ``threshold`` (breached, then
  recovered); it also consumes the ``alarm`` messages and notifies by the
  routes file (one route, ``group_wait`` 1 s) through the test SMTP server
  (:mod:`tests.smtpserver`, Twisted's ESMTP in this process);
* ``twistd centaure-correlator`` turns ``threshold`` into ``alarm`` (raised,
  cleared), its state in MariaDB;
* ``twistd centaure-db`` stores the delivery ledger (``notification``
  messages) in MariaDB: ``centaure query --notifications`` shows it.

Tables get unique prefixes (dropped afterwards), the bus a unique prefix.

What a user checks: one mail when the temperature goes over (subject and body
name the shelf and the rule, the body the value that breached it), one
recovery mail when it comes back, nothing more while it stays over or under,
and the ledger lists both deliveries as sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest
import pytest_twisted
import yaml
from twisted.internet import threads

from tests.conftest import MARIADB_URL, ROOT, settings_text
from tests.integration.daemons import BIN, TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port
from tests.integration.support import (
    declare_consumer_queues, drop_prefixed_tables, sleep, wait_until,
)
from tests.smtpserver import SmtpServer
from tests.snmp.alarmtable import DEVICE_TYPE, AlarmTableAgent, recording
from connector_snmp.profiles import SHIPPED_PROFILES_DIR

pytestmark = pytest.mark.integration

PROFILES = SHIPPED_PROFILES_DIR
HOST = "shelf-e2e"
RULE = "battery-hot"
#: batteryTemperature in the recording (profile eltek-smartpack: degrees C, no scale).
TEMPERATURE_OID = "1.3.6.1.4.1.12148.10.10.4.0"
RULES = f"""\
- name: {RULE}
  severity: major
  message: Battery temperature above 40 C
  when: {{metric: batteryTemperature, op: '>', value: 40}}
"""
ROUTES = """\
routes:
  - name: power-team
    match: {origin: [threshold]}
    group_by: [host]
    group_wait: 1s
    group_interval: 1s
    repeat_interval: 1h
    email: [power-team@example.com]
"""


class Shelf(AlarmTableAgent):
    """A power shelf (empty alarm table) whose battery temperature the test sets."""

    temperature = 27

    def set_temperature(self, value: int) -> None:
        self.temperature = value
        self.set_rows(())

    def set_rows(self, rows) -> None:
        # As AlarmTableAgent.set_rows, with the temperature line replaced.
        text = recording(self.community, rows).replace(
            f"{TEMPERATURE_OID}|2|27\n", f"{TEMPERATURE_OID}|2|{self.temperature}\n")
        assert f"{TEMPERATURE_OID}|2|{self.temperature}\n" in text
        tmp = self.path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path)
        self._mtime = max(int(time.time()), self._mtime + 1)
        os.utime(self.path, (self._mtime, self._mtime))


@pytest.fixture
def tables():
    tag = uuid.uuid4().hex[:8]
    names = {"db": f"w{tag}_", "correlator": f"c{tag}_", "alerter": f"a{tag}_"}
    yield names
    drop_prefixed_tables(MARIADB_URL, tuple(names.values()))


@pytest.fixture
def shelf():
    agent = Shelf(HOST)
    agent.start()
    yield agent
    agent.close()


def write_settings(tmp_path, prefix: str, tables: dict, smtp_port: int, plugin: str):
    """``<plugin>.ini``: the shared settings with the daemon's own HTTP port; (path, port)."""
    port = free_tcp_port()
    path = tmp_path / f"{plugin}.ini"
    path.write_text(settings_text(
        prefix, tmp_path, connector={"http_port": str(port)},
        inventory={"path": "inventory.yaml", "port_column": "port", "reload_interval": "0"},
        snmp={"profiles": PROFILES, "credentials": "credentials.yaml", "interval": "1s",
              "timeout": "1s", "retries": "1"},
        database={"url": MARIADB_URL},
        db={"table_prefix": tables["db"], "batch_interval": "20ms"},
        correlator={"table_prefix": tables["correlator"], "update_interval": "0",
                    "batch_interval": "20ms", "tick_interval": "200ms"},
        alerter={"table_prefix": tables["alerter"], "rules": "rules.yaml",
                 "routes": "alert-routes.yaml", "retry_initial": "0.5s"},
        smtp={"port": str(smtp_port), "starttls": "never", "sender": "centaure@example.com"}))
    return path, port


def counter(daemon: TwistdDaemon, name: str, connector: str) -> float:
    """A ``*_total`` counter of ``connector`` on the daemon's /metrics (0 when absent)."""
    import re
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/metrics", timeout=5) as r:
            body = r.read().decode()
    except OSError:
        return 0.0
    m = re.search(rf'^centaure_{name}_total{{connector="{connector}"}} (\S+)$', body, re.M)
    return float(m.group(1)) if m else 0.0


def state_of(connector: str):
    return lambda status, body: body.get("connectors", {}).get(connector, {}).get(
        "state", body.get("connectors", {}).get(connector, {}).get("schema")) == "ready"


def ledger(settings) -> list[dict]:
    out = subprocess.run([f"{BIN}/centaure", "query", "--notifications", "--json",
                          "-c", str(settings)], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def mails(smtp: SmtpServer) -> list[tuple[str, str]]:
    return [(m["Subject"], m.get_body(("plain",)).get_content()) for m in smtp.inbox]


@pytest_twisted.ensureDeferred
async def test_threshold_breach_and_recovery_mailed_by_real_daemons(tmp_path, prefix, tables,
                                                                     shelf):
    smtp = SmtpServer()
    smtp.start()
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "alert-routes.yaml").write_text(ROUTES)
    (tmp_path / "credentials.yaml").write_text(yaml.safe_dump(
        {"default": {"version": "v2c", "community": "__name__"}}))
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"devices": [
        {"name": HOST, "address": "127.0.0.1", "port": shelf.port,
         "device_type": DEVICE_TYPE}]}))
    # The consumers' queues first (as bus-config does): nothing published is missed.
    declare_consumer_queues(prefix, "alerter", "correlator", "db")
    daemons: dict[str, TwistdDaemon] = {}
    try:
        for plugin in ("centaure-db", "centaure-correlator", "centaure-alerter",
                       "centaure-snmp"):
            path, port = write_settings(tmp_path, prefix, tables, smtp.port, plugin)
            daemons[plugin] = TwistdDaemon(plugin, path, port)
        db, correlator, alerter = (daemons[p] for p in (
            "centaure-db", "centaure-correlator", "centaure-alerter"))
        for daemon, connector in ((db, "db"), (correlator, "correlator"),
                                  (alerter, "alerter")):
            await threads.deferToThread(daemon.wait_health, state_of(connector), 60)

        def logs() -> str:
            return "\n".join(f"--- {p}\n{d.logs()[-2500:]}" for p, d in daemons.items())

        def alive() -> None:
            for p, d in daemons.items():
                assert d.alive(), f"{p} died:\n{logs()}"

        async def until(predicate, what: str, timeout: float = 30.0) -> None:
            def check():
                alive()
                return predicate()
            try:
                await wait_until(check, timeout, what, step=0.1)
            except AssertionError as e:
                raise AssertionError(f"{e}; mails {mails(smtp)}\n{logs()}") from None

        async def evaluated_at_least(n: float, what: str, timeout: float = 30.0) -> float:
            deadline = time.monotonic() + timeout
            while True:
                alive()
                got = await threads.deferToThread(counter, alerter, "values_evaluated",
                                                  "alerter")
                if got >= n:
                    return got
                assert time.monotonic() < deadline, f"timed out waiting for {what}\n{logs()}"
                await sleep(0.2)

        # The shelf is polled and its values evaluated; 27 C: nothing to say.
        await evaluated_at_least(1, "the alerter to evaluate the shelf's values")
        assert smtp.inbox == []

        # Over 40 C: one mail naming the shelf and the rule.
        shelf.set_temperature(48)
        await until(lambda: smtp.inbox, "the breach mail")
        (breach,) = smtp.inbox
        subject, text = mails(smtp)[0]
        assert breach["To"] == "power-team@example.com"
        assert breach["From"] == "centaure@example.com"
        assert HOST in subject and RULE in subject and "1 active" in subject, subject
        # The body names the shelf, the rule, its severity and text, and the
        # value that breached it.
        assert f"{HOST} - {RULE} (new)" in text, text
        assert "[MAJOR]" in subject + text, (subject, text)
        assert "Battery temperature above 40 C" in text, text
        assert "batteryTemperature=48" in text, text
        assert "route power-team" in text, text

        # Still over for two more polls (8 scalars each) and a notifier tick: no second mail.
        n = await evaluated_at_least(0, "the counter")
        await evaluated_at_least(n + 2 * 8, "two more polls")
        await sleep(1.5)
        assert len(smtp.inbox) == 1, mails(smtp)

        # Back to 30 C: one recovery mail.
        shelf.set_temperature(30)
        await until(lambda: len(smtp.inbox) >= 2, "the recovery mail")
        subject, text = mails(smtp)[1]
        assert HOST in subject and RULE in subject and "1 resolved" in subject, subject
        assert f"{HOST} - {RULE}: cleared at" in text, text
        # And nothing more (a few polls and ticks later).
        await sleep(3)
        assert len(smtp.inbox) == 2, mails(smtp)

        # The delivery ledger: both mails, sent at the first attempt.
        settings = tmp_path / "centaure-db.ini"
        for _ in range(100):
            rows = await threads.deferToThread(ledger, settings)
            if len(rows) >= 2:
                break
            await sleep(0.2)
        assert [(r["host"], r["rule"], r["channel"], r["recipient"], r["state"], r["attempts"])
                for r in rows] == [(HOST, "power-team", "email", "power-team@example.com",
                                    "sent", 1)] * 2, rows
    finally:
        for daemon in daemons.values():
            daemon.stop()
        await smtp.stop()
