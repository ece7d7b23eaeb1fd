"""The trap service's SNMPv3 numbers on /metrics: replay memory evictions."""

from __future__ import annotations

from connector.metrics import render_prometheus
from connector_traps.usm import V3Receiver
from snmpwire.usm import encode_notification, localized_keys
from tests.unit.trap_service_support import make_service

ENGINE = bytes.fromhex("8000000001020304")
METRIC = 'centaure_v3_replay_memory_evicted_total{connector="traps"}'


def metric(service) -> str:
    lines = [line for line in render_prometheus([service.counters]).splitlines()
             if line.startswith(METRIC)]
    return lines[0].split()[-1] if lines else "absent"


def test_replay_memory_evictions_are_a_metrics_counter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the engine's boots file goes next to the default buffer
    (tmp_path / "var").mkdir()
    users = tmp_path / "trap-users.yaml"
    users.write_text(f"- user: ops\n  engine_id: {ENGINE.hex()}\n  auth_protocol: SHA\n"
                     "  auth_key: ops-auth-pass\n")
    users.chmod(0o600)
    service, _clock, _events, config = make_service(tmp_path, v3_users=str(users))
    table = config.v3.users
    keys = localized_keys(table.trap_user(ENGINE, b"ops"), ENGINE)

    def receiver(bound: int) -> V3Receiver:
        # A small bound stands for the 100,000 messages of a real flood.
        return V3Receiver(table, config.v3.engine_id, clock=lambda: 1_000_000.0,
                          replay_entries=bound)

    def send(first: int, n: int) -> None:
        for msg_id in range(first, first + n):
            trap = encode_notification(keys, engine_id=ENGINE, user="ops", trap_oid="1.3.6.1.4.1.9",
                                       boots=1, time=5000, msg_id=msg_id)
            assert service._v3(trap, ("192.0.2.7", 162))[1] is not None  # accepted

    service._start_engine(config.v3)
    assert metric(service) == "0"   # on /metrics as soon as v3 is configured
    service.config.v3 = receiver(3)
    send(1, 3)                      # the memory is full, nothing forgotten yet
    assert metric(service) == "0"
    send(4, 2)                      # two still in their window forgotten
    assert metric(service) == "2"
    # A reload whose window changed brings a new memory: its evictions add up.
    service.config.v3 = receiver(1)
    send(10, 3)
    assert metric(service) == "4"
    assert service.counters.get("v3_replay_memory_evicted") == 4
