"""Who can read and act on ``centaure-console`` without its login form.

The real daemon with ``[console] anonymous_view = true`` and a trusted
reverse proxy (``proxy_user_header = X-Remote-User`` believed from
127.0.0.2 only), what a user sees:

* anyone reads the board, without buttons, and a command without login is
  refused with the login page (401);
* the user the proxy names gets the role of the users file (an operator's
  command is taken); a name absent from the file is nobody, and so is the
  header sent by anyone but the proxy;
* a login through the form expires after ``session_lifetime``: the page says so (401);
* a users file others can read is warned about at start, and so is a broker user
  the correlator would not trust to name the person; logins and commands are
  counted on /metrics.
"""

from __future__ import annotations

import http.client
import re
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import sqlalchemy as sa

from centaure_shared.storage.alarms import create_all, make_schema
from tests.conftest import ROOT, settings_text
from tests.integration.daemons import BIN, TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port
from tests.integration.support import declare_consumer_queues

pytestmark = pytest.mark.integration
PROXY = "127.0.0.2"
PASSWORD = "alice's form passphrase"


def request(port: int, method: str, path: str, headers: dict | None = None,
            fields: dict | None = None, source: str = "127.0.0.1") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        body = urllib.parse.urlencode(fields).encode() if fields is not None else None
        headers = dict(headers or {})
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body, headers)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def test_anonymous_view_and_a_trusted_proxys_user(tmp_path, prefix):
    db_url = f"sqlite:///{tmp_path}/c.sqlite3"
    engine = sa.create_engine(db_url)
    create_all(engine, make_schema("corr_"))
    engine.dispose()
    port, metrics_port = free_tcp_port(), free_tcp_port()
    ini = tmp_path / "console.ini"
    ini.write_text(settings_text(prefix, tmp_path, database={"url": db_url},
                                 connector={"http_port": str(metrics_port)}, console={
        "port": str(port), "users_file": "users.yaml", "anonymous_view": "true",
        "proxy_user_header": "X-Remote-User", "proxy_addresses": PROXY,
        "session_lifetime": "2s"}))
    out = subprocess.run([f"{BIN}/centaure", "console", "add-user", "alice", "--role",
                          "operator", "--password-stdin", "-c", str(ini)],
                         input=PASSWORD + "\n", capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    declare_consumer_queues(prefix, "console")
    # Loosened by hand: the console says so at start, naming the file and its mode.
    (tmp_path / "users.yaml").chmod(0o644)
    daemon = TwistdDaemon("centaure-console", ini)
    try:
        daemon.wait_log("alarm board loaded")
        # Anyone reads; nobody acts.
        status, page = request(port, "GET", "/")
        assert status == 200 and "Active alarms" in page
        assert 'id="whoami"' not in page and 'href="/login"' in page
        status, page = request(port, "POST", "/alarm/42/command", fields={"action": "ack"})
        assert status == 401 and "Log in to act on alarms." in page

        # The proxy names alice: the file's operator.
        alice = {"X-Remote-User": "alice"}
        status, page = request(port, "GET", "/", alice, source=PROXY)
        assert status == 200
        assert '<span id="whoami">alice</span> <span class="role">(operator)</span>' in page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        status, page = request(port, "POST", "/alarm/42/command", alice,
                               {"action": "ack", "csrf": csrf}, source=PROXY)
        assert status == 404 and "The correlator has no alarm 42." in page
        # ... but not without the CSRF token of her pages.
        status, page = request(port, "POST", "/alarm/42/command", alice, {"action": "ack"},
                               source=PROXY)
        assert status == 403

        # A name the file does not know, and the header from anyone but the proxy: nobody.
        status, page = request(port, "GET", "/", {"X-Remote-User": "mallory"}, source=PROXY)
        assert status == 200 and 'id="whoami"' not in page
        status, page = request(port, "GET", "/", alice)
        assert status == 200 and 'id="whoami"' not in page
        status, page = request(port, "POST", "/alarm/42/command", alice,
                               {"action": "ack", "csrf": csrf})
        assert status == 401
        # A login through the form lasts session_lifetime; then the page says it expired.
        status, page = request(port, "GET", "/login")
        login_csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/login", urllib.parse.urlencode({
            "csrf": login_csrf, "name": "alice", "password": PASSWORD, "next": "/"}),
            {"Content-Type": "application/x-www-form-urlencoded",
             "Cookie": f"centaure_login={login_csrf}"})
        r = conn.getresponse()
        r.read()
        conn.close()
        assert r.status == 303, r.status
        session = {"Cookie": re.search(r"(centaure_session=[^;]+)",
                                       r.getheader("Set-Cookie")).group(1)}
        deadline = time.monotonic() + 30
        while True:
            status, page = request(port, "POST", "/alarm/42/command", session,
                                   {"action": "ack", "csrf": "x"})
            if status == 401:
                break
            assert status == 403, status  # logged in, wrong CSRF token: not yet expired
            assert time.monotonic() < deadline, "the session never expired"
            time.sleep(0.2)
        assert "Your session has expired: log in again." in page

        # What happened is counted on /metrics.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as r:
            metrics = r.read().decode()
        assert 'centaure_logins_total{connector="console"} 1' in metrics, metrics
        assert "centaure_commands_sent_total" not in metrics  # none reached an alarm
        refused = re.search(r'centaure_commands_refused_total\{connector="console"\} (\d+)', metrics)
        assert refused and int(refused.group(1)) >= 2, metrics

        logs = daemon.logs()
        assert "mallory, named by the proxy, is not a console user" in logs
        assert "X-Remote-User from 127.0.0.1 ignored (not in [console] proxy_addresses)" in logs
        assert (f"[console] users_file = {tmp_path}/users.yaml can be read by its group or "
                "others (mode 0644): chmod 600 it") in logs
        # Its broker user (guest) is no trusted command service here: it says so.
        assert ("the console publishes commands as broker user 'guest', which is not in "
                "[correlator] command_services") in logs
    finally:
        daemon.stop()
