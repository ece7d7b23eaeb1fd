"""``centaure-console`` over HTTPS ([console] tls_cert, tls_key): what a browser gets.

The test makes its own CA and server certificate; the client verifies the
chain and the host name. The session and login cookies are ``Secure``
(never sent over plain HTTP), the pages say ``Strict-Transport-Security``,
and a login over TLS works end to end.
"""

from __future__ import annotations

import http.cookiejar
import re
import ssl
import subprocess
import urllib.parse
import urllib.request

import pytest

from tests.conftest import ROOT, settings_text
from tests.integration.daemons import BIN, TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port
from tests.integration.support import declare_consumer_queues
from tests.integration.test_tls import make_pki

pytestmark = pytest.mark.integration


def test_console_over_tls_sends_secure_cookies_only(tmp_path, prefix):
    ca, server_pem = make_pki(tmp_path, "console")
    # The certificate and its key in two files, the key readable by its owner only.
    cert_pem, _, key_body = server_pem.partition(b"-----BEGIN PRIVATE KEY-----")
    (tmp_path / "console.pem").write_bytes(cert_pem)
    (tmp_path / "console.key").write_bytes(b"-----BEGIN PRIVATE KEY-----" + key_body)
    (tmp_path / "console.key").chmod(0o600)
    port = free_tcp_port()
    ini = tmp_path / "console.ini"
    ini.write_text(settings_text(prefix, tmp_path,
                                 database={"url": f"sqlite:///{tmp_path}/c.sqlite3"},
                                 console={"port": str(port), "users_file": "users.yaml",
                                          "tls_cert": "console.pem", "tls_key": "console.key"}))
    out = subprocess.run([f"{BIN}/centaure", "console", "add-user", "alice", "--role",
                          "operator", "--password-stdin", "-c", str(ini)],
                         input="tls passphrase\n", capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    declare_consumer_queues(prefix, "console")
    daemon = TwistdDaemon("centaure-console", ini)
    try:
        daemon.wait_log(f"web console on https://127.0.0.1:{port}/")
        context = ssl.create_default_context(cafile=ca)
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                             urllib.request.HTTPCookieProcessor(jar))
        base = f"https://localhost:{port}"
        with opener.open(base + "/login", timeout=30) as r:
            assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
            login_cookie = r.headers["Set-Cookie"]
            form = r.read().decode()
        assert "; Secure" in login_cookie and "; HttpOnly" in login_cookie
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        fields = urllib.parse.urlencode({"csrf": csrf, "name": "alice",
                                         "password": "tls passphrase", "next": "/"}).encode()
        with opener.open(base + "/login", data=fields, timeout=30) as r:
            assert r.status == 200 and "Active alarms" in r.read().decode()
        session = [c for c in jar if c.name == "centaure_session"]
        assert len(session) == 1 and session[0].secure
        assert session[0].has_nonstandard_attr("HttpOnly")
        # Plain HTTP to the same port gets no page.
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=10)
    finally:
        daemon.stop()
