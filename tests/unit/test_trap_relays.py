"""Who a trap is attributed to: the UDP source, or the agent a trusted relay names."""

from __future__ import annotations

import dataclasses

import pytest

from connector.settings import SettingsError, settings_from_string
from connector_traps.model import SNMP_TRAP_ADDRESS_0, Trap
from connector_traps.relays import TrustedRelays, agent_claim, attribute
from snmpwire import ber

LINK_UP = "1.3.6.1.6.3.1.1.5.4"


def v1(source: str, agent: str) -> Trap:
    """A v1 trap as convert.trap_from_message makes it (agent-addr appended as a varbind)."""
    return Trap(source=(source, 40000), version="v1", pdu="trap", trap_oid=LINK_UP, uptime=5,
                agent_address=agent, received=1.0, enterprise="1.3.6.1.4.1.9", generic=3,
                specific=0, varbinds=(("1.3.6.1.2.1.2.2.1.1.3", ber.INTEGER, 3),
                                      (SNMP_TRAP_ADDRESS_0, ber.IP_ADDRESS, agent)))


def v2c(source: str, claimed: str | None = None) -> Trap:
    vbs: tuple = (("1.3.6.1.2.1.2.2.1.1.3", ber.INTEGER, 3),)
    if claimed is not None:
        vbs += ((SNMP_TRAP_ADDRESS_0, ber.IP_ADDRESS, claimed),)
    return Trap(source=(source, 40000), version="v2c", pdu="trap", trap_oid=LINK_UP, uptime=5,
                agent_address=source, received=1.0, varbinds=vbs)


RELAYS = TrustedRelays(["192.0.2.7", "10.9.0.0/24", "2001:db8:9::/64"])


@pytest.mark.parametrize("address,trusted", [
    ("192.0.2.7", True), ("192.0.2.8", False), ("10.9.0.200", True), ("10.9.1.1", False),
    ("2001:db8:9::42", True), ("2001:db8:a::1", False), ("::ffff:192.0.2.7", True),
    ("fe80::1%eth0", False), ("not an address", False), ("", False),
])
def test_trusted_relays_membership(address: str, trusted: bool) -> None:
    assert (address in RELAYS) is trusted


def test_no_relay_trusts_nobody() -> None:
    assert not TrustedRelays() and "127.0.0.1" not in TrustedRelays()
    assert "fe80::1%eth0" in TrustedRelays(["fe80::/10"])


@pytest.mark.parametrize("bad", ["router01", "10.0.0.1/8", "10.0.0.0/33"])
def test_a_bad_relay_is_named(bad: str) -> None:
    with pytest.raises(ValueError, match=repr(bad)):
        TrustedRelays(["10.0.0.0/8", bad])
    with pytest.raises(SettingsError) as e:
        settings_from_string(f"[traps]\ntrusted_relays = 10.0.0.0/8, {bad}\n", source="s.ini")
    assert "trusted_relays" in str(e.value) and repr(bad) in str(e.value)


def test_settings_default_and_canonical_form() -> None:
    traps = settings_from_string("[traps]\n", source="s.ini").section("traps")
    assert traps.trusted_relays == ()
    assert (traps.report_rate_per_source, traps.report_rate_total) == (10.0, 200.0)
    traps = settings_from_string("[traps]\ntrusted_relays = 192.0.2.7, 2001:DB8::/32\n",
                                 source="s.ini").section("traps")
    assert traps.trusted_relays == ("192.0.2.7/32", "2001:db8::/32")


def test_v1_agent_addr_believed_only_from_a_trusted_relay() -> None:
    forged = attribute(v1("203.0.113.9", "10.0.0.1"), RELAYS)
    assert forged.agent_address == "203.0.113.9" and forged.claimed_address == "10.0.0.1"
    assert (SNMP_TRAP_ADDRESS_0, ber.IP_ADDRESS, "10.0.0.1") in forged.varbinds  # kept
    relayed = attribute(v1("192.0.2.7", "10.0.0.1"), RELAYS)
    assert relayed.agent_address == "10.0.0.1" and relayed.claimed_address is None


def test_snmp_trap_address_believed_only_from_a_trusted_relay() -> None:
    assert attribute(v2c("10.9.0.3", "10.0.0.2"), RELAYS).agent_address == "10.0.0.2"
    untrusted = attribute(v2c("198.51.100.1", "10.0.0.2"), RELAYS)
    assert (untrusted.agent_address, untrusted.claimed_address) == ("198.51.100.1", "10.0.0.2")
    # A claim that is no IpAddress, or 0.0.0.0, is no claim.
    odd = dataclasses.replace(v2c("192.0.2.7"), varbinds=(
        (SNMP_TRAP_ADDRESS_0, ber.OCTET_STRING, b"10.0.0.2"),))
    assert agent_claim(odd) is None and attribute(odd, RELAYS).agent_address == "192.0.2.7"
    assert attribute(v1("192.0.2.7", "0.0.0.0"), RELAYS).agent_address == "192.0.2.7"


def test_nothing_to_change_returns_the_same_trap_and_is_idempotent() -> None:
    plain = v2c("198.51.100.1")
    assert attribute(plain, RELAYS) is plain
    own = v1("198.51.100.1", "198.51.100.1")   # the usual v1 trap: it names its own source
    assert attribute(own, RELAYS) is own
    for trap in (v1("203.0.113.9", "10.0.0.1"), v1("192.0.2.7", "10.0.0.1"),
                 v2c("198.51.100.1", "10.0.0.2")):
        once = attribute(trap, RELAYS)
        assert attribute(once, RELAYS) == once
