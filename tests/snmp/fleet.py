"""Scale the simulated fleet: many devices served by ONE snmpsim process.

``make_fleet_dir`` writes n copies of a recording under different names
(``dev0001.snmprec``...), each with its own sysName; snmpsim then serves them
all from one process, told apart by community, on one port::

    devices = make_fleet_dir(tmp, 1000)              # [("dev0001", port), ...]
    sim = start_snmpsim(tmp, port=devices[0][1])
"""

from __future__ import annotations

import os
import shutil
import time

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


def seed_index_cache(data_dir: str, names: list[str], cache_dir: str) -> None:
    """Index ``names[0]``'s data file once with snmpsim's own code and give every other
    device of ``data_dir`` a copy of that index in ``cache_dir``.

    snmpsim indexes each data file at start-up (about 40 ms a file with the only dbm
    of this Python, ``dbm.dumb``: 40 s for 1,000 devices). The copies of
    ``make_fleet_dir`` differ only by a sysName of the same length, so every
    record sits at the same offset and one index fits all. A copy whose size
    differs from the first is left alone: snmpsim indexes it itself, as it
    rebuilds any index it finds older than its data file or in another format.
    """
    from snmpsim import confdir
    from snmpsim.record.search.database import RecordIndex
    from snmpsim.variation import RECORD_TYPES

    paths = [os.path.join(data_dir, name + ".snmprec") for name in names]
    # snmpsim trusts an index only if it is newer than its data file, to the second.
    past = time.time() - 60
    for path in paths:
        os.utime(path, (past, past))
    os.makedirs(cache_dir, exist_ok=True)
    saved, confdir.cache = confdir.cache, cache_dir
    try:
        RecordIndex(paths[0], RECORD_TYPES["snmprec"]).create()
    finally:
        confdir.cache = saved
    first, size = names[0], os.path.getsize(paths[0])
    index_files = [f for f in os.listdir(cache_dir) if first in f]
    for name, path in zip(names[1:], paths[1:]):
        if os.path.getsize(path) != size:
            continue
        for f in index_files:
            head, _, tail = f.rpartition(first)
            shutil.copyfile(os.path.join(cache_dir, f), os.path.join(cache_dir, head + name + tail))


def start_fleet(tmp: str, n_devices: int, template: str = "switch01", **kwargs
                ) -> tuple[Simulator, list[tuple[str, int]]]:
    """``make_fleet_dir`` in ``tmp/devices`` and start one snmpsim serving it."""
    data_dir = os.path.join(tmp, "devices")
    devices = make_fleet_dir(data_dir, n_devices, template)
    cache = os.path.join(tmp, "index-cache")
    seed_index_cache(data_dir, [name for name, _ in devices], cache)
    # A second --cache-dir after the launcher's own: snmpsim's argparse keeps the last.
    kwargs["extra_args"] = (*kwargs.get("extra_args", ()), f"--cache-dir={cache}")
    sim = start_snmpsim(data_dir, port=devices[0][1], tmp_dir=tmp, **kwargs)
    return sim, devices
