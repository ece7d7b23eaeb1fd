"""pytest fixtures for the simulated SNMP fleet (snmpsim serving ``fleet/``).

Use in a test module::

    (registered for every test module by tests/conftest.py)

    def test_x(snmpsim_fleet):
        snmpsim_fleet.endpoint      # "127.0.0.1:PORT"
        snmpsim_fleet.communities   # ["eltek01", ..., "switch01", ...]

Note: ``slow`` sleeps inside the responder's only thread, so querying it stalls
every other device of the same process for ~2 s (see fleet/README.md).
"""

from __future__ import annotations


import pytest

from tests.snmp.snmpsim import FLEET_DIR, Simulator, is_available, start_snmpsim


@pytest.fixture(scope="module")
def snmpsim_fleet(tmp_path_factory) -> Simulator:
    """One snmpsim process serving every recording of ``fleet/`` on a free port."""
    why = is_available()
    if why:
        pytest.fail(f"snmpsim cannot run here: {why}")
    sim = start_snmpsim(FLEET_DIR, tmp_dir=str(tmp_path_factory.mktemp("snmpsim")))
    try:
        yield sim
    finally:
        sim.stop()
