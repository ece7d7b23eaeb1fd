"""The twistd daemon as an operator runs it: heartbeats, status, /health, /metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import ROOT, restore_broker
from centaure.shipped import example_path
from connector_snmp.profiles import SHIPPED_PROFILES_DIR

pytestmark = pytest.mark.integration
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
CENTAURE = os.path.join(os.path.dirname(sys.executable), "centaure")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""  # not listening yet


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def daemon(tmp_path, write_settings):
    port = _free_port()
    # centaure-all runs the poller too: give it an (empty) inventory.
    (tmp_path / "inventory.yaml").write_text("devices: []\n")
    settings = write_settings(connector={"http_port": str(port)},
                              snmp={"profiles": SHIPPED_PROFILES_DIR},
                              traps={"listen": f"127.0.0.1:{_free_udp_port()}",
                                     "definitions": example_path("traps.yaml")})
    log = open(tmp_path / "twistd.log", "w")
    proc = subprocess.Popen([TWISTD, "-n", "--pidfile=", "centaure-all", "-c", settings],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    yield proc, settings, f"http://127.0.0.1:{port}", tmp_path / "twistd.log"
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    log.close()


def test_status_health_and_metrics(daemon, broker_guard):
    proc, settings, base, logfile = daemon
    status, body = _wait(lambda: (lambda r: r if r[0] == 200 else None)(_get(base + "/health")),
                         30, "/health to answer 200")
    health = json.loads(body)
    assert health["connected"] is True and health["degraded"] is False
    assert health["broker"].startswith("amqp://guest@127.0.0.1:5672")
    assert "guest:guest" not in body

    def status_lists_all():
        out = subprocess.run([CENTAURE, "status", "-c", settings], capture_output=True,
                             text=True, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        lines = [l for l in out.stdout.splitlines() if l.startswith("testnode")]
        return lines if len(lines) >= 6 and all(" ok " in l for l in lines) else None

    lines = _wait(status_lists_all, 60, "centaure status to list the connectors")
    # centaure-all heartbeats once per connector it runs.
    assert sorted(l.split()[1] for l in lines) == ["alerter", "console", "correlator", "db",
                                                         "snmp", "traps"]

    status, metrics = _get(base + "/metrics")
    assert status == 200
    assert 'centaure_published_total{connector="bus"}' in metrics
    assert "# TYPE centaure_buffered gauge" in metrics

    # The broker goes away: /health says 503 at once, then 200 when it is back.
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=60)
    try:
        status, body = _wait(lambda: (lambda r: r if r[0] == 503 else None)(_get(base + "/health")),
                             20, "/health to answer 503")
        assert json.loads(body)["connected"] is False
    finally:
        restore_broker()
    _wait(lambda: _get(base + "/health")[0] == 200, 60, "/health back to 200")
    assert proc.poll() is None, "the daemon died while the broker was down"

    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    out = subprocess.run([CENTAURE, "status", "-c", settings], capture_output=True, text=True,
                         cwd=ROOT)
    lines = [l for l in out.stdout.splitlines() if l.startswith("testnode")]
    assert lines and all(l.split()[2] == "stopped" for l in lines)


def test_bad_settings_stop_startup_with_one_clear_line(tmp_path):
    bad = tmp_path / "bad.ini"
    bad.write_text("[bus]\nheartbeat = often\n")
    out = subprocess.run([TWISTD, "-n", "--pidfile=", "centaure-all", "-c", str(bad)],
                         capture_output=True, text=True, cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert f"{bad}: [bus] heartbeat = 'often'" in text


def test_bus_config_is_idempotent(write_settings, prefix):
    settings = write_settings()
    for _ in range(2):
        out = subprocess.run([CENTAURE, "bus-config", "-c", settings], capture_output=True,
                             text=True, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        assert f"queue {prefix}.db (durable, x-dead-letter-exchange={prefix}.dead)" in out.stdout
        assert out.stdout.strip().endswith("bus configured")
    queues = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name"], capture_output=True,
                            text=True).stdout.split()
    for name in ("db", "correlator", "alerter", "dead", "status"):
        assert f"{prefix}.{name}" in queues


def test_bus_config_names_an_unreachable_broker(write_settings):
    settings = write_settings(bus={"url": "amqp://guest:guest@127.0.0.1:1/%2F",
                                   "connect_timeout": "2s"})
    out = subprocess.run([CENTAURE, "bus-config", "-c", settings], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith("centaure bus-config:")
    assert "Traceback" not in out.stderr
