"""Who a trap is about: its UDP source, or the agent a trusted relay names.

A v1 Trap-PDU names its agent in its own ``agent-addr`` field, and a relayed
SNMPv2c/v3 notification in its ``snmpTrapAddress.0`` varbind; whoever sends
the datagram writes either.  The UDP source address is what identifies the
sender: forging it takes more than writing a field, cannot be done from most
networks, and the answers (inform Responses, Reports) go to it.  So the
address a trap claims is believed only when the datagram comes from a relay
listed in ``[traps] trusted_relays`` (a proxy or trap forwarder the operator
runs).  Otherwise the trap is attributed to its source, and the claim is kept:
in the varbinds (``snmpTrapAddress.0``, which the RFC 3584 conversion appends
for v1) and in :attr:`Trap.claimed_address`.

A claim of ``0.0.0.0`` (agents without a configured address send it) is no
claim.  ``snmpTrapAddress.0`` is an IpAddress, so only IPv4 agents can be
named; a relay itself may be IPv4 or IPv6.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable

from snmpwire import ber
from connector_traps.model import SNMP_TRAP_ADDRESS_0, Trap

__all__ = ["TrustedRelays", "agent_claim", "attribute"]

_NO_CLAIM = ("", "0.0.0.0")


class TrustedRelays:
    """The addresses and networks whose traps may name another agent.

    ``entries`` are texts ``ipaddress.ip_network`` accepts (``192.0.2.7``,
    ``10.1.0.0/16``, ``2001:db8::/48``); a bad one raises ValueError naming it.
    Empty: no source is trusted.
    """

    def __init__(self, entries: Iterable[str] = ()) -> None:
        networks = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip()))
            except ValueError as e:
                raise ValueError(f"trusted relay {entry!r} is not an IP address or network "
                                 f"({e})") from None
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, address: object) -> bool:
        """Whether ``address`` (the text of a source address) is a trusted relay."""
        if not self.networks or not isinstance(address, str):
            return False
        try:
            # A scope (fe80::1%eth0) names the interface, not the host.
            ip = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def __repr__(self) -> str:
        return f"TrustedRelays({', '.join(str(n) for n in self.networks) or 'none'})"


def agent_claim(trap: Trap) -> str | None:
    """The agent address ``trap`` names, or None.

    v1: the ``agent-addr`` field (``Trap.agent_address`` as decoded, or
    ``claimed_address`` once :func:`attribute` did not believe it); v2c and
    v3: the first ``snmpTrapAddress.0`` varbind with an IpAddress value.
    """
    if trap.version == "v1":
        claim: object = trap.claimed_address or trap.agent_address
    else:
        claim = None
        for oid, tag, value in trap.varbinds:
            if oid == SNMP_TRAP_ADDRESS_0 and tag == ber.IP_ADDRESS:
                claim = value
                break
    if not isinstance(claim, str) or claim in _NO_CLAIM:
        return None
    return claim


def attribute(trap: Trap, relays: TrustedRelays) -> Trap:
    """``trap`` with ``agent_address`` set to the address believed.

    The claimed agent address when the source is a trusted relay, else the
    source address; a claim not believed (and differing from the source) is
    kept in ``claimed_address``.  Returns ``trap`` itself when nothing changes.
    """
    source = trap.source[0]
    claim = agent_claim(trap)
    if claim is not None and relays and source in relays:
        believed, doubted = claim, None
    else:
        believed = source
        doubted = claim if claim != source else None
    if believed == trap.agent_address and doubted == trap.claimed_address:
        return trap
    return dataclasses.replace(trap, agent_address=believed, claimed_address=doubted)
