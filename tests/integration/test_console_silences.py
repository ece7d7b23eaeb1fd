"""Silences set in ``centaure-console`` hold the mails of ``centaure-alerter`` (real daemons).

Real RabbitMQ, MariaDB, the test SMTP server (:mod:`tests.smtpserver`), the
console's pages driven over HTTP as a browser does (session cookie, the
page's CSRF token). What an operator checks:

* the Silences page is in the navigation; a viewer sees the list without the
  form or the expire buttons, and a POST forged with the viewer's own session
  and CSRF token is refused (403), as is the operator's without the token;
  a bad duration or no matcher gets the form back with a clear error (400);
* a silence the operator adds (host and alarm name) is listed with who set it,
  until when and why; the next raise of the matching alarm is not mailed (the
  ledger records it as suppressed by that silence) while the raise of another
  host is mailed;
* expired from the page, the silence leaves the list and the alarm it hid,
  still active, is mailed then.
"""

from __future__ import annotations

import calendar
import http.client
import re
import subprocess
import time
import urllib.parse

import pika
import pytest
import pytest_twisted
from twisted.internet import threads

from centaure_shared.storage.alarms import create_all, make_schema
from connector import messages
from tests.conftest import AMQP_URL, MARIADB_URL, ROOT, settings_text
from tests.integration.daemons import BIN, TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port
from tests.integration.support import (
    declare_consumer_queues,
    publish_confirmed,
    sql_tables,
    until_while_alive,
)
from tests.smtpserver import SmtpServer

pytestmark = pytest.mark.integration

RECEIVER = "noc@example.com"
ROUTES = f"""\
routes:
  - name: noc
    group_by: [host]
    group_wait: 200ms
    group_interval: 200ms
    repeat_interval: 1h
    send_resolved: true
    email: [{RECEIVER}]
"""
USERS = {"alice": ("operator", "alice's silence passphrase"), "victor": ("viewer", "victor 42")}
SILENCED, OTHER = "sw-maint.example.net", "sw-live.example.net"


class Client:
    """One person's console session, over HTTP (cookie and CSRF token as the pages give)."""

    def __init__(self, port: int, name: str) -> None:
        self.port = port
        status, page, headers = self.request("GET", "/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        status, page, headers = self.request(
            "POST", "/login", {"csrf": token, "name": name, "password": USERS[name][1],
                               "next": "/silences"}, cookie=f"centaure_login={token}")
        assert status == 303, (status, page)
        self.cookie = re.search(r"(centaure_session=[^;]+)", headers["set-cookie"]).group(1)
        self.csrf = ""

    def request(self, method: str, path: str, fields: dict | None = None,
                cookie: str | None = None) -> tuple[int, str, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Cookie": cookie} if cookie else {}
            body = None
            if fields is not None:
                body = urllib.parse.urlencode(fields)
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body, headers)
            r = conn.getresponse()
            headers = {k.lower(): v for k, v in r.getheaders()}
            headers["set-cookie"] = "\n".join(r.msg.get_all("Set-Cookie") or [])
            return r.status, r.read().decode(), headers
        finally:
            conn.close()

    def get(self, path: str) -> tuple[int, str]:
        status, page, _ = self.request("GET", path, cookie=self.cookie)
        found = re.search(r'name="csrf" value="([^"]+)"', page)
        if found:
            self.csrf = found.group(1)
        return status, page

    def post(self, path: str, fields: dict, csrf: bool = True) -> tuple[int, str, dict]:
        return self.request("POST", path, dict(fields, **({"csrf": self.csrf} if csrf else {})),
                            cookie=self.cookie)


def alarm(ref: int, host: str, first: float) -> messages.Alarm:
    return messages.Alarm(source="correlator@testnode", host=host, ref=ref, name="linkDown",
                          severity="major", state="raised", message=f"link down on {host}",
                          first_seen=first, last_seen=first, count=1, origin="trap")


def ledger(prefix: str) -> list[messages.Notification]:
    """The notification records waiting in the SQL writer's queue (what it would store)."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    out = []
    try:
        ch = conn.channel()
        while True:
            method, props, body = ch.basic_get(f"{prefix}.db", auto_ack=True)
            if method is None:
                return out
            if props.type == "notification":
                out.append(messages.decode(body))
    finally:
        conn.close()


def subjects(smtp: SmtpServer) -> list[str]:
    return [m["Subject"] for m in smtp.inbox]


@pytest_twisted.ensureDeferred
async def test_a_silence_set_in_the_console_holds_its_alarms_mail_until_expired(tmp_path,
                                                                              prefix,
                                                                              sql_tables):
    tables = sql_tables
    smtp = SmtpServer()
    smtp.start()
    (tmp_path / "alert-routes.yaml").write_text(ROUTES)
    (tmp_path / "rules.yaml").write_text("[]\n")
    alerter_port, console_port = free_tcp_port(), free_tcp_port()
    alerter_conf = {"table_prefix": tables["alerter"], "rules": "rules.yaml",
                    "routes": "alert-routes.yaml", "backfill": "false"}
    (tmp_path / "alerter.ini").write_text(settings_text(
        prefix, tmp_path, connector={"http_port": str(alerter_port)},
        database={"url": MARIADB_URL}, alerter=alerter_conf,
        smtp={"port": str(smtp.port), "starttls": "never", "sender": "centaure@example.com"}))
    console_ini = tmp_path / "console.ini"
    console_ini.write_text(settings_text(
        prefix, tmp_path, database={"url": MARIADB_URL},
        alerter={"table_prefix": tables["alerter"]},
        correlator={"table_prefix": tables["correlator"]},
        console={"port": str(console_port), "users_file": "users.yaml"}))
    daemons: list[TwistdDaemon] = []

    def setup() -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(MARIADB_URL)
        create_all(engine, make_schema(tables["correlator"]))
        engine.dispose()
        for name, (role, password) in USERS.items():
            out = subprocess.run([f"{BIN}/centaure", "console", "add-user", name, "--role",
                                  role, "--password-stdin", "-c", str(console_ini)],
                                 input=password + "\n", capture_output=True, text=True,
                                 cwd=ROOT, timeout=60)
            assert out.returncode == 0, out.stderr
        declare_consumer_queues(prefix, "alerter", "console", "db")

    async def until(predicate, what: str, timeout: float = 30.0) -> None:
        await until_while_alive(daemons, predicate, what, timeout,
                                lambda: f"mails {subjects(smtp)}")

    try:
        await threads.deferToThread(setup)
        daemons.append(TwistdDaemon("centaure-alerter", tmp_path / "alerter.ini", alerter_port))
        daemons.append(TwistdDaemon("centaure-console", console_ini))
        await threads.deferToThread(daemons[0].wait_health, lambda status, body: status == 200
                                    and body.get("connectors", {}).get("alerter", {})
                                    .get("state") == "ready")
        await threads.deferToThread(daemons[1].wait_log, "alarm board loaded")
        alice, victor = await threads.deferToThread(
            lambda: (Client(console_port, "alice"), Client(console_port, "victor")))

        # The viewer reads the (empty) list: no form, no button; a forged add is refused.
        status, page = await threads.deferToThread(victor.get, "/silences")
        assert status == 200 and '<a href="/silences">Silences</a>' in page
        assert 'id="silences"' in page and "No active silence." in page
        assert 'id="add-silence"' not in page and "Expire" not in page
        form = {"host": SILENCED, "name": "linkDown", "duration": "1h",
                "comment": "line card swap"}
        status, page, _ = await threads.deferToThread(victor.post, "/silences", form)
        assert status == 403 and "victor is a viewer" in page, page
        # The operator's form needs its CSRF token; a bad form says what is wrong.
        status, page = await threads.deferToThread(alice.get, "/silences")
        assert status == 200 and 'id="add-silence"' in page
        status, page, _ = await threads.deferToThread(alice.post, "/silences", form, False)
        assert status == 403 and "missing or wrong CSRF token" in page
        status, page, _ = await threads.deferToThread(alice.post, "/silences",
                                                      dict(form, duration="soon"))
        assert status == 400 and "Duration: &#39;soon&#39;: expected a number and a unit" \
            in page, page
        status, page, _ = await threads.deferToThread(alice.post, "/silences",
                                                      dict(form, host="", name=""))
        assert status == 400 and "Give a host or an alarm name to match" in page
        status, page = await threads.deferToThread(victor.get, "/silences")
        assert "No active silence." in page   # none of the refused forms added one

        # Added by alice: listed with its author, end and comment.
        added = time.time()
        status, page, headers = await threads.deferToThread(alice.post, "/silences", form)
        assert status == 303 and headers["location"] == "/silences?done=added", page
        status, page = await threads.deferToThread(victor.get, "/silences")
        rows = re.findall(r'<tr data-silence="(\d+)">(.*?)</tr>', page, re.S)
        assert len(rows) == 1, page
        silence_id, row = rows[0]
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        assert cells[1:3] == [SILENCED, "linkDown"] and cells[4] == "alice", cells
        assert cells[7] == "line card swap", cells
        ends = calendar.timegm(time.strptime(cells[6], "%Y-%m-%d %H:%M:%S"))
        assert added + 3600 - 2 <= ends <= time.time() + 3600 + 1, (cells[6], added)
        assert "Expire" not in page   # the viewer still has no button

        # The next raise of the silenced alarm is not mailed; another host's is.
        t0 = round(time.time() - 5, 3)
        await threads.deferToThread(publish_confirmed, prefix, [alarm(9001, SILENCED, t0),
                                                      alarm(9002, OTHER, t0 + 0.5)])
        await until(lambda: any(OTHER in s for s in subjects(smtp)), "the other host's mail")
        records: list[messages.Notification] = []

        def suppressed() -> bool:
            records.extend(ledger(prefix))
            return any(r.ref == 9001 and r.state == "suppressed" for r in records)

        await until(suppressed, "the silenced alarm's suppressed record")
        hidden = [r for r in records if r.ref == 9001]
        assert {r.state for r in hidden} == {"suppressed"}, hidden
        assert f"silence {silence_id} (host={SILENCED} name=linkDown): line card swap" in \
            hidden[0].reason, hidden[0].reason
        assert not any(SILENCED in s for s in subjects(smtp)), subjects(smtp)

        # Expired from the page: off the list, and the alarm it hid is mailed now.
        status, page, _ = await threads.deferToThread(
            victor.post, f"/silences/{silence_id}/expire", {})
        assert status == 403
        status, page = await threads.deferToThread(alice.get, "/silences")
        assert f'action="/silences/{silence_id}/expire"' in page
        status, page, headers = await threads.deferToThread(
            alice.post, f"/silences/{silence_id}/expire", {})
        assert status == 303 and headers["location"] == "/silences?done=expired", page
        status, page = await threads.deferToThread(alice.get, headers["location"])
        assert "No active silence." in page and "Silence expired" in page
        await until(lambda: any(SILENCED in s for s in subjects(smtp)),
                    "the mail of the alarm the silence hid")
        status, page, _ = await threads.deferToThread(
            alice.post, f"/silences/{silence_id}/expire", {})
        assert status == 404 and f"There is no active silence {silence_id}" in page
        logs = daemons[1].logs()
        assert f"alice silenced host={SILENCED} name=linkDown until" in logs
        assert "victor (viewer) tried to change silences" in logs
        assert not any(password in logs for _, password in USERS.values())
    finally:
        for d in daemons:
            d.stop()
        await smtp.stop()
