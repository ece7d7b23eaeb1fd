"""A ``file:`` secret that its group or others may read is warned about at start.

The warning names the setting, the file and its mode, never the secret. The
daemon case runs ``twistd centaure-traps`` on the embedded bus, as an
operator would, and reads its log.
"""

from __future__ import annotations

import pytest

from centaure.shipped import example_path
from connector.settings import load_settings, loose_secret_files
from tests.integration.support import run_on_embedded_bus
from tests.snmp.snmpd import free_udp_port

SECRET = "hunter2-do-not-log"


def secret_file(folder, name: str, mode: int, text: str = SECRET):
    path = folder / name
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def trap_receiver(**more: str) -> dict[str, str]:
    """The [traps] section of a receiver on a free port with the shipped definitions."""
    return {"listen": f"127.0.0.1:{free_udp_port()}",
            "definitions": str(example_path("traps.yaml")), **more}


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
    _, log = run_on_embedded_bus(
        "centaure-traps", tmp_path,
        traps=trap_receiver(), smtp={"password": f"file:{password}"})
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


# --------------------------------------------------------------------------
# The poller's credentials and the trap receiver's v3 users

FIX = "make it readable by the daemon's user only (chmod 600)"
HOLDER_FIX = ("make it readable by the daemon only (chmod 600, or 640 with the daemon's group) "
              "or give those values as file: or env: references")


def test_poller_credentials_others_can_read_are_named_with_their_mode(tmp_path):
    from centaure_shared.inventory import Device
    from connector_snmp.credentials import load_credentials, loose_credential_files

    keys = tmp_path / "keys"
    keys.mkdir()
    shared = secret_file(keys, "huawei-priv.key", 0o644)
    sw1 = secret_file(keys, "sw1.key", 0o640)
    secret_file(keys, "sw2.key", 0o600)
    path = secret_file(tmp_path, "credentials.yaml", 0o644, (
        f"default:\n  community: {SECRET}\n"
        f"huawei:\n  version: v3\n  user: u\n  auth_protocol: SHA\n  auth_key: env:AUTH\n"
        f"  priv_protocol: AES\n  priv_key: file:{shared}\n"
        f"switch:\n  version: v3\n  user: u\n  auth_protocol: SHA\n"
        f"  auth_key: file:{keys}/__name__.key\n"))
    devices = [Device(name, address, "switch") for name, address in
               (("sw1", "10.0.0.1"), ("sw2", "10.0.0.2"))]
    lines = loose_credential_files(load_credentials(path, environ={}), devices)
    assert lines == [
        f"the file {path} holds SNMP community written in it and can be read by others "
        f"(mode 0644); {HOLDER_FIX}",
        f"{path}: [huawei] priv_key: the secret file {shared} can be read by its group and "
        f"others (mode 0644); {FIX}",
        f"{path}: [switch] auth_key (device sw1): the secret file {sw1} can be read by its "
        f"group (mode 0640); {FIX}",
    ]
    assert not any(SECRET in line for line in lines)
    path.chmod(0o600)
    shared.chmod(0o400)
    sw1.chmod(0o600)
    assert loose_credential_files(load_credentials(path, environ={}), devices) == []


def test_a_secrets_file_its_group_reads_is_named_unless_the_group_is_the_daemons(tmp_path,
                                                                                  monkeypatch):
    import os

    from connector_snmp.credentials import load_credentials, loose_credential_files

    path = secret_file(tmp_path, "credentials.yaml", 0o640, f"default:\n  community: {SECRET}\n")
    # 0640 root:centaure, as documented: the group is the daemon's own.
    assert loose_credential_files(load_credentials(path)) == []
    monkeypatch.setattr(os, "getegid", lambda: path.stat().st_gid + 1)
    assert loose_credential_files(load_credentials(path)) == [
        f"the file {path} holds SNMP community written in it and can be read by its group "
        f"(mode 0640); {HOLDER_FIX}"]
    # References only: nothing secret is written in the file, whatever its mode.
    path.write_text("default:\n  community: env:COMMUNITY\n")
    path.chmod(0o644)
    assert loose_credential_files(load_credentials(path)) == []


def test_trap_v3_users_others_can_read_are_named_with_their_mode(tmp_path):
    from connector_traps.usm import load_users, loose_user_files

    key = secret_file(tmp_path, "ops-priv.key", 0o604)
    path = secret_file(tmp_path, "trap-users.yaml", 0o644, (
        f"- user: ops\n  engine_id: 8000000001020304\n  auth_protocol: SHA\n"
        f"  auth_key: {SECRET}\n  priv_protocol: AES\n  priv_key: file:{key}\n"
        f"- user: informer\n  auth_protocol: SHA\n  auth_key: file:{key}\n"))
    lines = loose_user_files(path, load_users(path))
    assert lines == [
        f"the file {path} holds SNMPv3 auth_key written in it and can be read by others "
        f"(mode 0644); {HOLDER_FIX}",
        f"{path}: user ops priv_key: the secret file {key} can be read by others "
        f"(mode 0604); {FIX}",
    ]
    assert not any(SECRET in line for line in lines)
    path.chmod(0o600)
    key.chmod(0o600)
    assert loose_user_files(path, load_users(path)) == []


def _warnings_about(log: str, path) -> list[str]:
    return [line for line in log.splitlines() if f"file {path}" in line]


def _warned_at_start_and_reload(started: str, log: str, *paths) -> list[list[str]]:
    """Each path's warning lines in ``log``, once checked: one at start, one more at reload,
    and never the secret."""
    for path in paths:
        assert len(_warnings_about(started, path)) == 1, started
    found = [_warnings_about(log, path) for path in paths]
    assert all(len(lines) == 2 for lines in found), log
    assert SECRET not in log
    return found


@pytest.mark.integration
def test_the_trap_daemon_warns_of_its_v3_users_at_start_and_at_reload(tmp_path):
    key = secret_file(tmp_path, "ops-priv.key", 0o644)
    users = secret_file(tmp_path, "trap-users.yaml", 0o644, (
        f"- user: ops\n  engine_id: 8000000001020304\n  auth_protocol: SHA\n"
        f"  auth_key: {SECRET}\n  priv_protocol: AES\n  priv_key: file:{key}\n"))
    started, log = run_on_embedded_bus(
        "centaure-traps", tmp_path, reload="trap definitions reloaded",
        traps=trap_receiver(v3_users=str(users)))
    held, keyed = _warned_at_start_and_reload(started, log, users, key)
    assert all("mode 0644" in line and "warn" in line for line in held + keyed)


@pytest.mark.integration
def test_the_poller_warns_of_its_credentials_at_start_and_at_reload(tmp_path):
    key = secret_file(tmp_path, "priv.key", 0o640)
    credentials = secret_file(tmp_path, "credentials.yaml", 0o604, (
        f"default:\n  community: {SECRET}\n"
        f"huawei:\n  version: v3\n  user: u\n  auth_protocol: SHA\n  auth_key: file:{key}\n"))
    started, log = run_on_embedded_bus("centaure-snmp", tmp_path, reload="configuration reloaded",
                                       snmp={"credentials": "credentials.yaml"})
    held, keyed = _warned_at_start_and_reload(started, log, credentials, key)
    assert all("mode 0604" in line and "warn" in line for line in held)
    assert all("[huawei] auth_key" in line and "mode 0640" in line for line in keyed)
