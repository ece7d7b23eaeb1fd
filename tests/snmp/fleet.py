"""Scale the simulated fleet: many devices served by ONE snmpsim process.

``make_fleet_dir`` writes n copies of a recording under different names
(``dev0001.snmprec``...), each with its own sysName; snmpsim then serves them
all from one process, told apart by community, on one port::

    devices = make_fleet_dir(tmp, 1000)              # [("dev0001", port), ...]
    sim = start_snmpsim(tmp, port=devices[0][1])
"""

from __future__ import annotations

import os

from tests.snmp.simfixtures import FLEET_DIR
from tests.snmp.snmpsim import Simulator, free_udp_port, start_snmpsim

SYS_NAME = "1.3.6.1.2.1.1.5.0|"


def device_name(i: int) -> str:
    """The community (and sysName) of device ``i`` (1-based): ``dev0001``."""
    return f"dev{i:04d}"


def make_fleet_dir(tmp: str, n_devices: int, template: str = "switch01", *,
                   port: int | None = None, source_dir: str = FLEET_DIR
                   ) -> list[tuple[str, int]]:
    """Write ``n_devices`` copies of ``source_dir/template.snmprec`` into ``tmp``.

    Returns ``[(community, port), ...]``; ``port`` (a free UDP port if not
    given) is the one to pass to ``start_snmpsim(tmp, port=...)``.
    """
    with open(os.path.join(source_dir, template + ".snmprec")) as f:
        lines = f.read().splitlines(keepends=True)
    idx = [i for i, line in enumerate(lines) if line.startswith(SYS_NAME)]
    os.makedirs(tmp, exist_ok=True)
    port = port or free_udp_port()
    out = []
    for n in range(1, n_devices + 1):
        name = device_name(n)
        for i in idx:
            lines[i] = f"{SYS_NAME}4|{name}\n"
        path = os.path.join(tmp, name + ".snmprec")
        with open(path, "w") as f:
            f.writelines(lines)
        os.chmod(path, 0o644)
        out.append((name, port))
    os.chmod(tmp, 0o755)
    return out


def start_fleet(tmp: str, n_devices: int, template: str = "switch01", **kwargs
                ) -> tuple[Simulator, list[tuple[str, int]]]:
    """``make_fleet_dir`` in ``tmp/devices`` and start one snmpsim serving it."""
    devices = make_fleet_dir(os.path.join(tmp, "devices"), n_devices, template)
    sim = start_snmpsim(os.path.join(tmp, "devices"), port=devices[0][1], tmp_dir=tmp, **kwargs)
    return sim, devices
