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
