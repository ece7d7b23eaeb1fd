"""The trap receiver's plain data: a decoded trap, and what a definition says of it."""

from __future__ import annotations

import hashlib
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
    agent_address: str                # v1 agent-addr, else the source; see relays.attribute
    varbinds: tuple[Varbind, ...]     # without sysUpTime.0 and snmpTrapOID.0
    received: float                   # UNIX time of reception
    community: bytes | None = None    # v1/v2c; never published
    user: str | None = None           # v3
    engine_id: bytes | None = None    # v3 sender's (traps) or our (informs) engine ID
    request_id: int | None = None     # v2c/v3 PDU request-id (the same in a retransmission)
    context_engine_id: bytes | None = None  # v3 scopedPDU contextEngineID
    enterprise: str | None = None     # v1 Trap-PDU enterprise
    generic: int | None = None        # v1 generic-trap
    specific: int | None = None       # v1 specific-trap
    # An agent address the trap names (v1 agent-addr, snmpTrapAddress.0) that
    # was not believed: the source is no trusted relay (connector_traps.relays).
    claimed_address: str | None = None

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


#: Bumped if the fields below change: an id of another derivation never matches.
_ID_SCHEME = b"centaure-trap-id/1"


def _part(value: object) -> bytes:
    """One field, typed and length-prefixed: no two field lists hash the same bytes."""
    if value is None:
        return b"n"
    if isinstance(value, bool):  # before int: a bool is an int
        raw, tag = (b"1" if value else b"0"), b"t"
    elif isinstance(value, int):
        raw, tag = str(value).encode(), b"i"
    elif isinstance(value, str):
        raw, tag = value.encode("utf-8", "surrogatepass"), b"s"
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw, tag = bytes(value), b"b"
    elif isinstance(value, tuple):
        raw, tag = b"".join(_part(v) for v in value), b"("
    else:  # not produced by the BER codec; still deterministic
        raw, tag = repr(value).encode("utf-8", "backslashreplace"), b"r"
    return tag + len(raw).to_bytes(4, "big") + raw


def trap_message_id(trap: Trap) -> str:
    """The AMQP ``message_id`` of the ``event`` published for ``trap``: ``trap:<32 hex>``.

    Deterministic, so that receivers which get the same notification (a
    device configured with two trap destinations, a floating address, an
    inform the agent retransmits with the same request-id) publish it under
    the same id and the SQL writer and the correlator keep it once.
    The id is a 16-byte BLAKE2b digest of what identifies the notification
    on the wire:

    * the sender's IP address, **not its UDP port**: a device sending to two
      destinations may do so from two sockets (net-snmp opens one session,
      hence one source port, per trap sink), and a relay or NAT may change
      the port; the address of a given agent stays the same;
    * the SNMP version and PDU kind (trap / inform), snmpTrapOID.0 and
      sysUpTime.0 (v1: the time-stamp);
    * v2c and v3: the PDU's request-id (an inform retransmitted by its agent
      keeps it; note that a v3 retransmission may change msgID and the
      engine time, which are not part of the id);
    * v3: the message's authoritative engine ID and the contextEngineID
      (a trap's sender; an inform's receiver, so receivers sharing informs
      must share ``[traps] engine_id``);
    * v1: agent-addr (as believed: see :mod:`connector_traps.relays`; the
      address claimed and not believed too), enterprise, generic-trap and
      specific-trap;
    * every other varbind (OID, type, value): two distinct v1 traps sent in
      the same hundredth of a second (linkDown of two ports) differ only
      there.

    Never the receiver's node, the reception time or the community.
    """
    h = hashlib.blake2b(_ID_SCHEME, digest_size=16)
    common = (trap.source[0], trap.version, trap.pdu, trap.trap_oid, trap.uptime)
    if trap.version == "v1":
        specific: tuple = (trap.agent_address, trap.enterprise, trap.generic, trap.specific)
        if trap.claimed_address is not None:
            specific += (trap.claimed_address,)
    elif trap.version == "v3":
        specific = (trap.request_id, trap.engine_id, trap.context_engine_id)
    else:
        specific = (trap.request_id,)
    h.update(_part(common))
    h.update(_part(specific))
    h.update(_part(tuple(trap.varbinds)))
    return "trap:" + h.hexdigest()
