"""A simulated power shelf whose alarm table a test rewrites between polls.

The agent is snmpsim serving one Eltek-style recording (``fleet/eltek01.snmprec``:
its system group and DC scalars, so the shipped ``eltek-smartpack`` profile
polls it) whose alarm table ``1.3.6.1.4.1.12148.10.13.8.2.1`` holds the rows
the test asks for.

How the table changes, with real SNMP: snmpsim 1.2.2 looks at a data file's
modification time on every request (``RecordIndex.get_handles`` in
``snmpsim/record/search/database.py``) and, when it changed, closes the file
and rebuilds its index; the next GET/GETNEXT/GETBULK is answered from the new
content, rows added or gone. So :meth:`AlarmTableAgent.set_rows` writes the
new recording to a temporary file, renames it over the served one (a request
never sees half a file) and moves the modification time forward by at least
one second, because snmpsim compares whole seconds (``os.stat()[8]``): two
rewrites within the same second would otherwise go unnoticed.

snmpsim's ``writecache`` variation could not do this: a SET changes the value
of an OID the recording already has, but cannot make a row appear or vanish
from a walk.

snmpsim must serve the file in place (not a copy) for the rewrite to be seen,
so the data directory is a world-readable temporary directory (as root,
snmpsim runs as ``nobody``; pytest's ``tmp_path`` is mode 700).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass

from centaure.simulator import FLEET_DIR, Simulator, free_udp_port, start_snmpsim

__all__ = ["ALARM_TABLE", "AlarmRow", "AlarmTableAgent", "DEVICE_TYPE", "recording"]

#: The Eltek-style alarm table (columns 1 key, 2 name, 3 severity, 4 text).
ALARM_TABLE = "1.3.6.1.4.1.12148.10.13.8.2.1"
#: The inventory device type that selects the ``eltek-smartpack`` profile.
DEVICE_TYPE = "eltek"
_SYS_NAME = "1.3.6.1.2.1.1.5.0|"
_TEMPLATE = os.path.join(FLEET_DIR, "eltek01.snmprec")


@dataclass(frozen=True)
class AlarmRow:
    """One row of the shelf's alarm table.

    ``severity`` is the table's code, mapped by the profile:
    1 critical, 2 major, 3 minor, 4 warning.
    """

    index: int
    name: str
    severity: int
    message: str

    def lines(self) -> list[str]:
        """Its four ``.snmprec`` lines (key, name, severity, text)."""
        i = self.index
        return [f"{ALARM_TABLE}.1.{i}|2|{i}", f"{ALARM_TABLE}.2.{i}|4|{self.name}",
                f"{ALARM_TABLE}.3.{i}|2|{self.severity}", f"{ALARM_TABLE}.4.{i}|4|{self.message}"]


def recording(community: str, rows: Iterable[AlarmRow]) -> str:
    """The ``.snmprec`` text of a shelf named ``community`` with alarm table ``rows``."""
    with open(_TEMPLATE) as f:
        base = [line.rstrip("\n") for line in f if line.strip()]
    lines = [f"{_SYS_NAME}4|{community}" if line.startswith(_SYS_NAME) else line
             for line in base if not line.startswith(ALARM_TABLE + ".")]
    lines += [line for row in rows for line in row.lines()]

    # snmpsim walks the file in order: OIDs sorted numerically, as in any recording.
    def oid_key(line: str) -> tuple[int, ...]:
        return tuple(int(p) for p in line.split("|", 1)[0].split("."))

    return "\n".join(sorted(lines, key=oid_key)) + "\n"


class AlarmTableAgent:
    """An snmpsim process serving one shelf (community = its name) on a fixed port.

    The port stays the same across :meth:`stop` and :meth:`start`, so that the
    inventory keeps pointing at it while the agent is away.
    """

    def __init__(self, community: str, rows: Iterable[AlarmRow] = ()) -> None:
        self.community = community
        self.port = free_udp_port()
        self.data_dir = tempfile.mkdtemp(prefix="centaure-alarmtable-")
        os.chmod(self.data_dir, 0o755)
        self.path = os.path.join(self.data_dir, community + ".snmprec")
        self._mtime = 0
        self.sim: Simulator | None = None
        self.set_rows(rows)

    def set_rows(self, rows: Iterable[AlarmRow]) -> None:
        """Replace the alarm table; the next poll sees the new rows."""
        tmp = self.path + ".new"  # not *.snmprec: snmpsim never serves it
        with open(tmp, "w") as f:
            f.write(recording(self.community, rows))
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path)
        # A different whole second than the previous version, never earlier.
        self._mtime = max(int(time.time()), self._mtime + 1)
        os.utime(self.path, (self._mtime, self._mtime))

    def start(self) -> None:
        """Start (or restart) the agent on its port; returns once it answers."""
        if self.sim is not None and self.sim.alive():
            return
        self.sim = start_snmpsim(self.data_dir, port=self.port)
        # A copy would not see set_rows(): refuse to test something else.
        assert self.sim.data_dir == self.data_dir, \
            f"snmpsim serves a copy ({self.sim.data_dir}), not {self.data_dir}"

    def stop(self) -> None:
        """Stop the agent: the device no longer answers."""
        if self.sim is not None:
            self.sim.stop()

    def close(self) -> None:
        """Stop the agent and remove its files."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self) -> str:
        """The end of the current snmpsim log (for failure messages)."""
        return self.sim.log_tail() if self.sim is not None else ""
