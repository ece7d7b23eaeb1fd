"""A daemon whose port is taken stops at once: exit code 1, one line naming the setting."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from centaure.shipped import example_path
from tests.conftest import ROOT, settings_text

pytestmark = pytest.mark.integration
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def _bound(kind: int) -> socket.socket:
    """A socket holding a free local port (TCP: listening), as another program would."""
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        s.listen()
    return s


def _run_traps(folder, http_port: int, trap_port: int) -> subprocess.CompletedProcess:
    (folder / "inventory.yaml").write_text("devices: []\n")
    settings = folder / "settings.ini"
    settings.write_text(settings_text(
        "centaure", folder, url="embedded", connector={"http_port": str(http_port)},
        traps={"listen": f"127.0.0.1:{trap_port}", "definitions": example_path("traps.yaml")}))
    return subprocess.run([TWISTD, "-n", "--pidfile=", "centaure-traps", "-c", str(settings)],
                          cwd=folder, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=ROOT))


def _critical_lines(out: subprocess.CompletedProcess) -> list[str]:
    text = out.stdout + out.stderr
    assert "Traceback" not in text, text
    return [line for line in text.splitlines() if "cannot start" in line]


@pytest.mark.parametrize("taken", ["http", "traps"])
def test_a_taken_port_stops_the_daemon_in_one_line(tmp_path, taken):
    with _bound(socket.SOCK_STREAM) as tcp, _bound(socket.SOCK_DGRAM) as udp:
        http_port, trap_port = tcp.getsockname()[1], udp.getsockname()[1]
        if taken == "http":
            udp.close()       # only the HTTP port is busy
        else:
            tcp.close()       # only the trap port is busy
        out = _run_traps(tmp_path, http_port, trap_port)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = _critical_lines(out)
    if taken == "http":
        expected = (f"centaure-traps: cannot start: [connector] http_port = {http_port}: "
                    f"cannot listen on 127.0.0.1:{http_port} (Address already in use)")
    else:
        expected = (f"centaure-traps: cannot start: [traps] listen = 127.0.0.1:{trap_port}: "
                    f"cannot listen on it (Address already in use)")
    assert len(lines) == 1 and lines[0].endswith(expected), lines
