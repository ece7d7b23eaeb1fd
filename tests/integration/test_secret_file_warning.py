"""A ``file:`` secret that its group or others may read is warned about at start.

The warning names the setting, the file and its mode, never the secret. The
daemon case runs ``twistd centaure-traps`` on the embedded bus, as an
operator would, and reads its log.
"""

from __future__ import annotations

import socket

import pytest

from centaure.shipped import example_path
from connector.settings import load_settings, loose_secret_files
from tests.conftest import settings_text
from tests.integration.daemons import TwistdDaemon

SECRET = "hunter2-do-not-log"


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def secret_file(folder, name: str, mode: int, text: str = SECRET):
    path = folder / name
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def test_loose_secret_files_are_named_with_their_mode_never_their_content(tmp_path):
    loose = secret_file(tmp_path, "smtp-password", 0o644)
    group = secret_file(tmp_path, "rules-url", 0o640, "sqlite:///rules.sqlite3")
    tight = secret_file(tmp_path, "db-url", 0o600, "sqlite:///x.sqlite3")
    (tmp_path / "settings.ini").write_text(
        f"[smtp]\npassword = file:{loose}\n"
        f"[alerter]\nrules_url = file:{group}\n"
        f"[database]\nurl = file:{tight}\n")
    lines = loose_secret_files(load_settings(tmp_path / "settings.ini"))
    assert sorted(lines) == sorted([
        f"[smtp] password: the secret file {loose} can be read by its group and others "
        "(mode 0644); make it readable by the daemon's user only (chmod 600)",
        f"[alerter] rules_url: the secret file {group} can be read by its group "
        "(mode 0640); make it readable by the daemon's user only (chmod 600)",
    ])
    assert not any(SECRET in line for line in lines)


@pytest.mark.integration
def test_a_daemon_warns_at_start_of_a_secret_file_others_can_read(tmp_path):
    password = secret_file(tmp_path, "smtp-password", 0o644)
    (tmp_path / "inventory.yaml").write_text("devices: []\n")
    port = _free_port(socket.SOCK_STREAM)
    settings = tmp_path / "settings.ini"
    settings.write_text(settings_text(
        "centaure", tmp_path, url="embedded", connector={"http_port": str(port)},
        traps={"listen": f"127.0.0.1:{_free_port(socket.SOCK_DGRAM)}",
               "definitions": example_path("traps.yaml")},
        smtp={"password": f"file:{password}"}))
    daemon = TwistdDaemon("centaure-traps", settings, http_port=port)
    try:
        daemon.wait_health(lambda status, body: status == 200, timeout=60)
    finally:
        daemon.stop()
    log = daemon.logs()
    warned = [line for line in log.splitlines() if f"the secret file {password}" in line]
    assert len(warned) == 1, log
    assert "[smtp] password" in warned[0] and "mode 0644" in warned[0] and "warn" in warned[0]
    assert SECRET not in log


def test_a_routes_file_secret_others_can_read_is_warned_about(tmp_path):
    from twisted.logger import formatEvent, globalLogPublisher

    from connector_alerter.routes import parse_routes

    loose = secret_file(tmp_path, "hook-key", 0o604)
    tight = secret_file(tmp_path, "pager-token", 0o400)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        parse_routes({"routes": [{"name": "chat", "webhook": [
            {"url": "https://hooks.example.com/x", "secret": f"file:{loose}"}],
            "command": ["/bin/true"], "command_env": {"TOKEN": f"file:{tight}"}}]})
    finally:
        globalLogPublisher.removeObserver(events.append)
    texts = [formatEvent(e) for e in events if "secret file" in formatEvent(e)]
    assert texts == [f"routes file: route 'chat'.webhook[0].secret: the secret file {loose} "
                     "can be read by others (mode 0604); make it readable by the daemon's "
                     "user only (chmod 600)"]
