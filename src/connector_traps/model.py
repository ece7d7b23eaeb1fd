"""The trap receiver's plain data: a decoded trap, and what a definition says of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# (oid, BER tag name, value) as snmpwire.ber decodes it.
Varbind = tuple[str, str, object]

SNMP_TRAP_ENTERPRISE_0 = "1.3.6.1.6.3.1.1.4.3.0"
SNMP_TRAP_ADDRESS_0 = "1.3.6.1.6.3.18.1.3.0"


@dataclass(frozen=True, slots=True)
class Trap:
    """A trap or inform as received, in the SNMPv2 form (RFC 3584 for v1)."""

    source: tuple[str, int]           # sender address and UDP port
    version: Literal["v1", "v2c", "v3"]
    pdu: Literal["trap", "inform"]
    trap_oid: str                     # snmpTrapOID.0 (for v1: derived per RFC 3584)
    uptime: int | None                # sysUpTime.0 / v1 time-stamp, in TimeTicks
    agent_address: str                # v1 agent-addr, else the source address
    varbinds: tuple[Varbind, ...]     # without sysUpTime.0 and snmpTrapOID.0
    received: float                   # UNIX time of reception
    community: bytes | None = None    # v1/v2c; never published
    user: str | None = None           # v3
    engine_id: bytes | None = None    # v3 sender's (traps) or our (informs) engine ID

    def __repr__(self) -> str:
        return (f"Trap({self.version} {self.pdu} {self.trap_oid} from "
                f"{self.source[0]}:{self.source[1]}, {len(self.varbinds)} varbinds)")


@dataclass(frozen=True, slots=True)
class Classification:
    """What the trap definitions say of one trap."""

    name: str
    severity: str                     # one of connector.messages.SEVERITIES
    action: Literal["raise", "clear", "none"] = "none"
    alarm: str | None = None          # the alarm raised or cleared
    key: str = ""                     # identifying varbind values, joined with "|"
    message: str = ""
    known: bool = True                # False: no definition matched
