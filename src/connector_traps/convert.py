"""Decoded SNMP messages -> :class:`~connector_traps.model.Trap`, and varbinds -> JSON.

SNMPv1 Trap-PDUs are translated to the SNMPv2 form as RFC 3584 section 3.1
says:

* ``uptime`` (sysUpTime.0) is the time-stamp;
* ``trap_oid`` (snmpTrapOID.0) is ``1.3.6.1.6.3.1.1.5.{generic + 1}`` for the
  generic traps 0..5 (coldStart .. egpNeighborLoss), and
  ``<enterprise>.0.<specific>`` for enterpriseSpecific (6);
* ``snmpTrapAddress.0`` (IpAddress, the agent-addr) and
  ``snmpTrapEnterprise.0`` (the enterprise OID) are appended to the varbinds,
  unless the trap already carries them.  ``snmpTrapCommunity.0``, which the RFC
  also appends, is deliberately not: the community is a secret and is never
  published (it stays in ``Trap.community``).

SNMPv2c SNMPv2-Trap and InformRequest PDUs: the first varbind should be
sysUpTime.0 and the second snmpTrapOID.0 (RFC 3416 section 4.2.6).  A missing
or misplaced sysUpTime.0 is tolerated (``uptime`` is then None, or taken
wherever it is); snmpTrapOID.0 is required somewhere, with an OBJECT
IDENTIFIER value, else the message is refused.  Both are removed from
``Trap.varbinds`` (their first occurrence).

Every refusal raises a :class:`ConvertError` (a ``ValueError``) whose
``reason`` is the receiver's counter name.
"""

from __future__ import annotations

from snmpwire import ber
from snmpwire.oids import SNMP_TRAP_OID_0, SYS_UPTIME_0
from snmpwire.ber import SnmpMessage
from connector_traps.model import (
    SNMP_TRAP_ADDRESS_0,
    SNMP_TRAP_ENTERPRISE_0,
    Trap,
)

__all__ = [
    "ConvertError",
    "WrongPDU",
    "NoTrapOID",
    "BadTrap",
    "GENERIC_TRAPS",
    "SNMP_TRAPS",
    "trap_from_message",
    "v1_trap_oid",
    "varbind_to_json",
    "normalize_address",
]

#: snmpTraps (SNMPv2-MIB): the generic notifications live under it.
SNMP_TRAPS = "1.3.6.1.6.3.1.1.5"
#: v1 generic-trap number -> the SNMPv2 notification OID (RFC 3584 3.1).
GENERIC_TRAPS = {g: f"{SNMP_TRAPS}.{g + 1}" for g in range(6)}
_ENTERPRISE_SPECIFIC = 6
_UINT32_MAX = 2**32 - 1


class ConvertError(ValueError):
    """A decoded message that is not a usable trap; ``reason`` names the counter."""

    reason = "bad_trap"

    def __init__(self, message: str) -> None:
        super().__init__(message)


class WrongPDU(ConvertError):
    """Not a Trap-PDU, SNMPv2-Trap-PDU or InformRequest-PDU of its version."""

    reason = "wrong_pdu"


class NoTrapOID(ConvertError):
    """A v2c notification without a usable snmpTrapOID.0."""

    reason = "no_trap_oid"


class BadTrap(ConvertError):
    """A v1 trap whose generic/specific numbers cannot be translated."""

    reason = "bad_v1_trap"


def normalize_address(host: str) -> str:
    """An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, as a dual-stack
    socket reports IPv4 senders) as plain IPv4; anything else unchanged."""
    if host[:7].lower() == "::ffff:" and host.count(".") == 3:
        return host[7:]
    return host


def v1_trap_oid(enterprise: str, generic: int, specific: int) -> str:
    """snmpTrapOID.0 of a v1 trap (RFC 3584 section 3.1 (1))."""
    if generic == _ENTERPRISE_SPECIFIC:
        if not 0 <= specific <= _UINT32_MAX:
            raise BadTrap(f"enterprise-specific trap with specific-trap {specific} < 0")
        return f"{enterprise}.0.{specific}"
    oid = GENERIC_TRAPS.get(generic)
    if oid is None:
        raise BadTrap(f"generic-trap {generic} is not 0..6")
    return oid


def trap_from_message(msg: SnmpMessage, source: tuple[str, int], received: float) -> Trap:
    """The :class:`Trap` of a decoded v1 Trap-PDU or v2c SNMPv2-Trap/InformRequest.

    ``source`` is the sender's (address, port), ``received`` the UNIX time of
    reception.  Raises a :class:`ConvertError` (``ValueError``) for anything
    else: another PDU type, a v2c notification without snmpTrapOID.0, a v1
    trap with an impossible generic/specific pair.
    """
    host = normalize_address(source[0])
    src = (host, source[1])
    version = msg.version
    pdu = msg.pdu_type
    if version == ber.VERSION_1:
        if pdu != ber.TRAP_V1:
            raise WrongPDU(f"v1 PDU 0x{pdu:02X} is not a Trap-PDU")
        enterprise = msg.enterprise
        if enterprise is None or msg.generic_trap is None or msg.specific_trap is None:
            raise WrongPDU("v1 Trap-PDU without its trap fields")
        trap_oid = v1_trap_oid(enterprise, msg.generic_trap, msg.specific_trap)
        varbinds = list(msg.varbinds)
        present = {vb[0] for vb in varbinds}
        agent = msg.agent_addr or host
        if SNMP_TRAP_ADDRESS_0 not in present:
            varbinds.append((SNMP_TRAP_ADDRESS_0, ber.IP_ADDRESS, agent))
        if SNMP_TRAP_ENTERPRISE_0 not in present:
            varbinds.append((SNMP_TRAP_ENTERPRISE_0, ber.OBJECT_IDENTIFIER, enterprise))
        return Trap(
            source=src, version="v1", pdu="trap", trap_oid=trap_oid,
            uptime=msg.time_stamp, agent_address=agent, varbinds=tuple(varbinds),
            received=received, community=msg.community, enterprise=enterprise,
            generic=msg.generic_trap, specific=msg.specific_trap,
        )
    if version == ber.VERSION_2C:
        if pdu == ber.TRAP_V2:
            kind = "trap"
        elif pdu == ber.INFORM_REQUEST:
            kind = "inform"
        else:
            raise WrongPDU(f"v2c PDU 0x{pdu:02X} is not an SNMPv2-Trap or InformRequest")
        uptime, trap_oid, rest = split_v2_varbinds(msg.varbinds)
        return Trap(
            source=src, version="v2c", pdu=kind, trap_oid=trap_oid,  # type: ignore[arg-type]
            uptime=uptime, agent_address=host, varbinds=rest,
            received=received, community=msg.community, request_id=msg.request_id,
        )
    raise WrongPDU(f"SNMP version {version} is not v1 or v2c")


def split_v2_varbinds(vbs: list) -> tuple[int | None, str, tuple]:
    """(uptime, trap OID, the other varbinds) of an SNMPv2 notification.

    Raises NoTrapOID when snmpTrapOID.0 is missing or not an OID.
    """
    # The usual shape first: sysUpTime.0, snmpTrapOID.0, the rest.
    if (len(vbs) >= 2 and vbs[0][0] == SYS_UPTIME_0 and vbs[1][0] == SNMP_TRAP_OID_0
            and vbs[1][1] == ber.OBJECT_IDENTIFIER):
        up = vbs[0]
        return (up[2] if up[1] == ber.TIMETICKS else None), vbs[1][2], tuple(vbs[2:])
    return _v2_odd(vbs)


def _v2_odd(vbs: list) -> tuple[int | None, str, tuple]:
    """sysUpTime.0 and snmpTrapOID.0 wherever they are (first occurrence)."""
    i_up = i_oid = None
    for i, vb in enumerate(vbs):
        if vb[0] == SYS_UPTIME_0 and i_up is None:
            i_up = i
        elif vb[0] == SNMP_TRAP_OID_0 and i_oid is None:
            i_oid = i
    if i_oid is None:
        raise NoTrapOID("no snmpTrapOID.0 varbind")
    tag, value = vbs[i_oid][1], vbs[i_oid][2]
    if tag != ber.OBJECT_IDENTIFIER or not isinstance(value, str):
        raise NoTrapOID(f"snmpTrapOID.0 is a {tag}, not an ObjectIdentifier")
    uptime = None
    if i_up is not None and vbs[i_up][1] == ber.TIMETICKS:
        uptime = vbs[i_up][2]
    rest = tuple(vb for i, vb in enumerate(vbs) if i != i_up and i != i_oid)
    return uptime, value, rest


_TEXT_EXTRA = frozenset("\t\n\r")


def varbind_to_json(oid: str, tag: str, value: object) -> tuple[str, str, object]:
    """``(oid, type, value)`` for an Event's varbind: JSON-friendly ``value``.

    ``type`` is the BER tag name (``"OctetString"``, ``"Counter32"`` ...).
    Octet strings (and Opaque) become text when they are UTF-8 whose
    characters are all printable (tab, CR and LF allowed), else ``"0x"`` and
    lower-case hex (a string with a trailing NUL, a MAC address ...); the
    empty string stays ``""``.  Integers, OID and IpAddress text and None
    (Null and the v2c exceptions) pass unchanged.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if not raw:
            return oid, tag, ""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return oid, tag, "0x" + raw.hex()
        if text.isprintable() or all(c.isprintable() or c in _TEXT_EXTRA for c in text):
            return oid, tag, text
        return oid, tag, "0x" + raw.hex()
    return oid, tag, value
