"""pytest fixtures for a real snmpd (import them into a test module)."""

from __future__ import annotations

import shutil

import pytest

from tests.snmp.snmpd import Agent, start_snmpd


@pytest.fixture(scope="module")
def snmpd_agent(tmp_path_factory) -> Agent:
    """One snmpd per test module (v1/v2c community ``public``, every V3_USERS user)."""
    if not shutil.which("snmpd") and not shutil.which("/usr/sbin/snmpd"):
        pytest.fail("net-snmp snmpd is not installed: the test command installs it (scripts/bootstrap.sh)")
    agent = start_snmpd(tmp_path_factory.mktemp("snmpd"))
    yield agent
    agent.stop()


#: How many snmpd agents ``snmpd_agents`` runs.
FLEET_SIZE = 20


@pytest.fixture(scope="module")
def snmpd_agents(tmp_path_factory) -> list[Agent]:
    """``FLEET_SIZE`` real snmpd agents on distinct ports, one per device (v2c ``public``).

    They start in parallel (well under a second each); all are stopped afterwards.
    """
    from concurrent.futures import ThreadPoolExecutor

    if not shutil.which("snmpd") and not shutil.which("/usr/sbin/snmpd"):
        pytest.fail("net-snmp snmpd is not installed: the test command installs it (scripts/bootstrap.sh)")
    root = tmp_path_factory.mktemp("snmpd-fleet")
    agents: list[Agent] = []

    def start(i: int) -> Agent:
        agent = start_snmpd(root / f"agent{i:02d}", v3_users=(), sys_name=f"agent{i:02d}")
        agents.append(agent)
        return agent

    try:
        with ThreadPoolExecutor(8) as pool:
            started = list(pool.map(start, range(1, FLEET_SIZE + 1)))
        assert len({a.port for a in started}) == FLEET_SIZE
        yield started
    finally:
        for agent in agents:
            agent.stop()
