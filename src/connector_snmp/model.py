"""The poller's plain data model: devices, how to reach them, what to poll.

Everything here is an immutable value, built by the inventory and profile
loaders and read by the client, the operators and the scheduler. Nothing in
this module does I/O.

Profile YAML (one file per device family in the profiles folder)::

    name: if-mib                    # unique profile name
    device_types: [switch, router]  # inventory device types it applies to
    interval: 60s                   # optional default poll interval
    scalars:                        # fetched with GET
      - {name: sysUpTime, oid: 1.3.6.1.2.1.1.3.0, kind: gauge, unit: cs}
    tables:                         # walked with GETBULK (GETNEXT in v1)
      - name: ifTable
        columns:
          - {name: ifHCInOctets, oid: 1.3.6.1.2.1.31.1.1.1.6, kind: counter, unit: octets,
             operators: [{counter_rate: {bits: 64}}]}
    alarm_tables:                   # vendor active-alarm tables -> alarm_snapshot
      - name: hwAlarmTable
        key: 1.3.6.1.4.1.2011.x.1       # column whose value (or the row index) identifies the alarm
        name_column: 1.3.6.1.4.1.2011.x.2
        severity: 1.3.6.1.4.1.2011.x.3
        severity_map: {"1": critical, "2": major, "3": minor, "4": warning}
        message: 1.3.6.1.4.1.2011.x.4
        since: null                     # optional column with a UNIX time

An operator is written either as a bare name (``hex_to_text``) or as a
one-key mapping ``{name: {arg: value}}``; both become an ``OperatorCall``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

from centaure_shared.metric import MetricSpec

Version = Literal["v1", "v2c", "v3"]
AuthProtocol = Literal["none", "MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"]
PrivProtocol = Literal["none", "DES", "AES", "AES192", "AES256"]


@dataclass(frozen=True)
class V3Security:
    """SNMPv3 USM credentials (keys are secrets: never log them)."""

    user: str
    auth_protocol: AuthProtocol = "none"
    auth_key: str = ""
    priv_protocol: PrivProtocol = "none"
    priv_key: str = ""
    context_name: str = ""

    @property
    def level(self) -> str:
        """noAuthNoPriv, authNoPriv or authPriv."""
        if self.auth_protocol == "none":
            return "noAuthNoPriv"
        return "authNoPriv" if self.priv_protocol == "none" else "authPriv"

    def __repr__(self) -> str:
        return (f"V3Security(user={self.user!r}, auth={self.auth_protocol}, "
                f"priv={self.priv_protocol}, keys=***)")


@dataclass(frozen=True)
class SnmpTarget:
    """How to reach one agent: address, port, version, credentials, patience."""

    address: str                      # IPv4 or IPv6 literal, or a host name
    port: int = 161
    version: Version = "v2c"
    community: bytes = b"public"      # v1/v2c
    v3: V3Security | None = None      # v3
    timeout: float = 2.0              # seconds per try
    retries: int = 1                  # tries after the first
    max_repetitions: int = 25         # GETBULK

    def __repr__(self) -> str:
        return f"SnmpTarget({self.address}:{self.port} {self.version})"


@dataclass(frozen=True)
class TableSpec:
    """Columns walked together; the index of a row is the OID suffix."""

    name: str
    columns: tuple[MetricSpec, ...]


@dataclass(frozen=True)
class AlarmTableSpec:
    """A vendor active-alarm table, turned into an ``alarm_snapshot``."""

    name: str
    key: str | None                   # column OID; None: the row index is the key
    name_column: str | None           # column OID of the alarm name; None: the table name
    severity: str | None
    severity_map: Mapping[str, str] = field(default_factory=dict, hash=False)
    message: str | None = None
    since: str | None = None


@dataclass(frozen=True)
class Profile:
    """What to poll on devices of some types."""

    name: str
    device_types: tuple[str, ...]
    scalars: tuple[MetricSpec, ...] = ()
    tables: tuple[TableSpec, ...] = ()
    alarm_tables: tuple[AlarmTableSpec, ...] = ()
    interval: float | None = None


# A polled value: (oid, ber tag name, python value), the BER codec's Varbind.
Varbind = tuple[str, str, object]
