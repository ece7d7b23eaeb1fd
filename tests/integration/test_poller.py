"""The SNMP poller as an operator runs it, against real agents and RabbitMQ.

- ``centaure poll`` prints what ``snmpget`` says for the same OIDs (snmpd).
- ``twistd centaure-snmp`` publishes one ``perf`` per device poll, the UPS's
  alarm table (snmpsim) as an ``alarm_snapshot``, an ``unreachable`` entry for
  a silent device, and polls a device added to the inventory after SIGHUP.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from connector import messages
from tests.conftest import ROOT, settings_text
from tests.integration.support import declare_check_queue, drain
from tests.snmp.snmpd import free_udp_port
from connector_snmp.profiles import SHIPPED_PROFILES_DIR

pytestmark = pytest.mark.integration
BIN = os.path.dirname(sys.executable)
PROFILES = SHIPPED_PROFILES_DIR


def write_setup(tmp_path, prefix, devices, credentials=None, interval="2s"):
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"devices": devices}))
    (tmp_path / "credentials.yaml").write_text(yaml.safe_dump(
        credentials or {"default": {"version": "v2c", "community": "public"}}))
    text = settings_text(prefix, tmp_path, inventory={"path": "inventory.yaml",
                                                      "port_column": "port",
                                                      "reload_interval": "0"},
                         snmp={"profiles": PROFILES, "credentials": "credentials.yaml",
                               "interval": interval, "timeout": "1s", "retries": "0"})
    path = tmp_path / "settings.ini"
    path.write_text(text)
    return str(path)


def snmpget(agent, oid: str) -> str:
    out = subprocess.run(["snmpget", "-v2c", "-c", "public", "-On", "-Oq", "-Ov",
                          f"127.0.0.1:{agent.port}", oid],
                         capture_output=True, text=True, env=agent.env, timeout=10)
    return out.stdout.strip().strip('"')


def test_centaure_poll_matches_snmpget(snmpd_agent, tmp_path, prefix):
    settings = write_setup(tmp_path, prefix, [
        {"name": "srv1", "address": "127.0.0.1", "port": snmpd_agent.port,
         "device_type": "server"}])
    out = subprocess.run([f"{BIN}/centaure", "poll", "srv1", "-c", settings, "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["reachable"] is True
    by_oid = {m["oid"]: m for m in result["metrics"]}
    assert by_oid["1.3.6.1.2.1.1.5.0"]["value"] == snmpget(snmpd_agent, "1.3.6.1.2.1.1.5.0")
    assert by_oid["1.3.6.1.2.1.1.5.0"]["metric"] == "sysName"
    # Every interface snmpd reports, with its description.
    walk = subprocess.run(["snmpbulkwalk", "-v2c", "-c", "public", "-On", "-Oq",
                           f"127.0.0.1:{snmpd_agent.port}", "1.3.6.1.2.1.2.2.1.2"],
                          capture_output=True, text=True, env=snmpd_agent.env).stdout
    expected = {line.split(" ", 1)[0].lstrip("."): line.split(" ", 1)[1].strip('"')
                for line in walk.strip().splitlines()}
    got = {oid: m["value"] for oid, m in by_oid.items() if oid.startswith("1.3.6.1.2.1.2.2.1.2.")}
    assert got == expected and got
    # The text table names the device and its metrics.
    text = subprocess.run([f"{BIN}/centaure", "poll", "srv1", "-c", settings],
                          capture_output=True, text=True, cwd=ROOT, timeout=60).stdout
    assert text.startswith("srv1 (127.0.0.1:") and "sysName" in text and "ifDescr" in text


def test_centaure_poll_of_a_silent_device_fails(tmp_path, prefix):
    settings = write_setup(tmp_path, prefix, [
        {"name": "ghost", "address": "127.0.0.1", "port": free_udp_port(), "device_type": "server"}])
    out = subprocess.run([f"{BIN}/centaure", "poll", "ghost", "-c", settings],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 1
    assert "ghost did not answer" in out.stderr
    out = subprocess.run([f"{BIN}/centaure", "poll", "nope", "-c", settings],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2 and "no device 'nope' in the inventory" in out.stderr


def _start_daemon(tmp_path, settings):
    log = open(tmp_path / "twistd.log", "w")
    proc = subprocess.Popen([f"{BIN}/twistd", "-n", "--pidfile=", "centaure-snmp", "-c", settings],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    return proc, log


def _collect(queue: str, until, timeout: float):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.extend(messages.decode(body) for body, _ in drain(queue, idle=0.5))
        if until(seen):
            return seen
    raise AssertionError(f"timed out; got {[(m.msg_type, m.host) for m in seen][:20]}")


def test_daemon_publishes_perf_snapshots_and_reloads(snmpd_agent, snmpsim_fleet, tmp_path,
                                                     prefix):
    perf_q = declare_check_queue(prefix, "perf")
    snap_q = f"{prefix}.snapcheck"
    import pika

    from tests.conftest import AMQP_URL

    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.exchange_declare(exchange=f"{prefix}.alarm_snapshot", exchange_type="topic", durable=True)
    ch.queue_declare(queue=snap_q, durable=True)
    ch.queue_bind(queue=snap_q, exchange=f"{prefix}.alarm_snapshot", routing_key="#")
    conn.close()

    sim_port = int(snmpsim_fleet.endpoint.rsplit(":", 1)[1])
    devices = [
        {"name": "srv1", "address": "127.0.0.1", "port": snmpd_agent.port, "device_type": "server"},
        {"name": "ups01", "address": "127.0.0.1", "port": sim_port, "device_type": "ups"},
        {"name": "ghost", "address": "127.0.0.1", "port": free_udp_port(), "device_type": "server"},
    ]
    credentials = {"default": {"version": "v2c", "community": "public"},
                   "ups": {"community": "__name__"}}
    settings = write_setup(tmp_path, prefix, devices, credentials)
    proc, log = _start_daemon(tmp_path, settings)
    try:
        perfs = _collect(perf_q, lambda ms: {m.host for m in ms} >= {"srv1", "ups01"}, 40)
        srv = next(m for m in perfs if m.host == "srv1")
        assert srv.device_type == "server" and srv.source.startswith("snmp@")
        names = {m.name for m in srv.metrics}
        assert {"sysName", "sysUpTime", "ifDescr", "hrStorageDescr"} <= names

        snaps = _collect(snap_q, lambda ms: {m.host for m in ms} >= {"ups01", "ghost"}, 40)
        ups = next(m for m in snaps if m.host == "ups01")
        assert len(ups.alarms) == 2
        assert all(a.key.startswith("upsAlarmTable:") for a in ups.alarms)
        ghost = next(m for m in snaps if m.host == "ghost")
        assert [a.key for a in ghost.alarms] == ["unreachable"]

        # A device added to the inventory is polled after SIGHUP.
        devices.append({"name": "srv2", "address": "127.0.0.1", "port": snmpd_agent.port,
                        "device_type": "server"})
        (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"devices": devices}))
        proc.send_signal(signal.SIGHUP)
        _collect(perf_q, lambda ms: any(m.host == "srv2" for m in ms), 40)

        # A broken inventory is refused: the running configuration keeps polling.
        (tmp_path / "inventory.yaml").write_text("devices:\n  - {name: srv3}\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "reload refused" not in (tmp_path / "twistd.log").read_text():
            assert time.monotonic() < deadline, "the bad inventory was not refused"
            time.sleep(0.2)
        drain(perf_q, idle=0.2)
        _collect(perf_q, lambda ms: any(m.host == "srv2" for m in ms), 20)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        log.close()
    text = (tmp_path / "twistd.log").read_text()
    assert "configuration reloaded: 4 devices" in text


FLEET = {  # snmpsim recording (community) -> inventory device type and model
    "switch01": ("switch", ""), "router01": ("router", ""), "server01": ("server", ""),
    "ups01": ("ups", ""), "huawei01": ("Huawei", "SMU02C"), "eltek01": ("Eltek", "SmartPack2"),
    "vertiv01": ("Vertiv", "ACU+"),
}


def test_every_shipped_profile_matches_its_recording(snmpsim_fleet, tmp_path, prefix):
    from centaure_shared.inventory import normalize_device_type
    from centaure_shared.inventory import Device
    from connector_snmp.profiles import load_profiles

    port = int(snmpsim_fleet.endpoint.rsplit(":", 1)[1])
    devices = [{"name": name, "address": "127.0.0.1", "port": port, "device_type": dtype,
                "model": model} for name, (dtype, model) in FLEET.items()]
    settings = write_setup(tmp_path, prefix, devices, {
        "default": {"version": "v2c", "community": "__name__"}})
    profiles = load_profiles(PROFILES)
    for name, (dtype, model) in FLEET.items():
        out = subprocess.run([f"{BIN}/centaure", "poll", name, "-c", settings, "--json"],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert out.returncode == 0, f"{name}: {out.stderr}"
        result = json.loads(out.stdout)
        device = Device(name=name, address="127.0.0.1", device_type=normalize_device_type(dtype),
                        model=model)
        expected = {spec.name for p in profiles.for_device(device)
                    for spec in list(p.scalars) + [c for t in p.tables for c in t.columns]}
        answered = {m["metric"] for m in result["metrics"]
                    if m["value"] not in ("NoSuchObject", "NoSuchInstance", "EndOfMibView")}
        assert expected and expected <= answered, f"{name}: no answer for {expected - answered}"
        if any(p.alarm_tables for p in profiles.for_device(device)):
            assert result["alarms"], f"{name}: its alarm table gave no alarm"


def test_slow_and_toobig_agents_are_reported_not_fatal(snmpsim_fleet, tmp_path, prefix):
    port = int(snmpsim_fleet.endpoint.rsplit(":", 1)[1])
    devices = [{"name": n, "address": "127.0.0.1", "port": port, "device_type": "switch"}
               for n in ("slow", "toobig")]
    settings = write_setup(tmp_path, prefix, devices, {
        "default": {"version": "v2c", "community": "__name__"}})
    # "slow" stalls the whole snmpsim process while it sleeps: ask it last.
    for name, says in (("toobig", "toobig answered with an error: SnmpError: tooBig"),
                       ("slow", "slow did not answer")):
        out = subprocess.run([f"{BIN}/centaure", "poll", name, "-c", settings],
                             capture_output=True, text=True, cwd=ROOT, timeout=90)
        assert out.returncode == 1, f"{name}: {out.stdout} {out.stderr}"
        assert says in out.stderr and "Traceback" not in out.stderr, out.stderr
