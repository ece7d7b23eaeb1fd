"""snmpsim for the tests: the launcher lives in :mod:`centaure.simulator`.

``centaure demo`` ships the launcher, so it moved into the package; this module
re-exports it so that tests keep importing ``tests.snmp.snmpsim``.
"""

from __future__ import annotations

from centaure.simulator import (  # noqa: F401  (re-exported)
    BOOT,
    FLEET_DIR,
    HOST,
    SYS_DESCR,
    FleetNotFound,
    Simulator,
    SimulatorError,
    communities_of,
    find_fleet_dir,
    free_udp_port,
    is_available,
    snmpget,
    start_snmpsim,
)

__all__ = ["BOOT", "FLEET_DIR", "HOST", "SYS_DESCR", "FleetNotFound", "Simulator",
           "SimulatorError", "communities_of", "find_fleet_dir", "free_udp_port",
           "is_available", "snmpget", "start_snmpsim"]
