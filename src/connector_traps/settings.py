"""Settings section of the trap receiver: ``[traps]``.

Imported by every connector (through :func:`connector.settings.discover_sections`)
so that each accepts the whole shared ``settings.ini``: keep this module light
(no SQLAlchemy, no YAML, no Twisted here).

Values are checked as far as text allows: listen endpoints are IP literals
with a port, the table name is an SQL identifier (never pasted into SQL), the
engine ID is an even number of hex digits of RFC 3411's length (5 to 32
octets).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re

from connector.settings import (
    Bool,
    Choice,
    Duration,
    FilePath,
    Float,
    Int,
    InvalidValue,
    ParseContext,
    Parser,
    Secret,
    SecretText,
    Size,
    Str,
    StrList,
    OptionalUrl,
    register_section,
    sql_identifier,
    setting,
)

__all__ = ["Endpoint", "TrapSettings", "parse_endpoint"]

class Endpoint(Parser):
    """``address:port`` with an IPv4 address, or ``[address]:port`` with an IPv6 one.

    Returns the canonical text (``0.0.0.0:162``, ``[::]:162``), which
    :func:`parse_endpoint` splits again.
    """

    allowed = "expected address:port with an IPv4 address or [IPv6]:port, port from 0 to 65535 (e.g. 0.0.0.0:162, [::]:162)"
    _RE = re.compile(r"(?:\[([^\]]+)\]|([^:\[\]]+)):([0-9]{1,5})")

    def parse(self, raw: str, ctx: ParseContext) -> str:
        m = self._RE.fullmatch(raw)
        if not m:
            raise self.invalid()
        text = m[1] if m[1] is not None else m[2]
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise self.invalid(f"has {text!r}, which is not an IP address") from None
        if (m[1] is not None) != (address.version == 6):
            raise self.invalid("has brackets around an IPv4 address" if m[1] is not None
                               else "has an IPv6 address without brackets")
        port = int(m[3])
        if port > 65535:
            raise self.invalid(f"has port {port}, out of range")
        return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def parse_endpoint(text: str) -> tuple[str, int]:
    """``0.0.0.0:162`` or ``[::]:162`` (as :class:`Endpoint` returns them) -> (address, port)."""
    host, _, port = text.strip().rpartition(":")
    return host.strip("[]"), int(port)


class IpNetwork(Parser):
    """An IPv4 or IPv6 address or network (``192.0.2.7``, ``10.1.0.0/16``, ``2001:db8::/48``).

    Returns the canonical text (``192.0.2.7/32``); a network with host bits
    set (``10.1.2.3/16``) is refused: it is most likely a typo.
    """

    allowed = "expected IPv4 or IPv6 addresses or networks, e.g. 192.0.2.7, 10.1.0.0/16, 2001:db8::/48"

    def parse(self, raw: str, ctx: ParseContext) -> str:
        try:
            return str(ipaddress.ip_network(raw.strip()))
        except ValueError as e:
            raise self.invalid(f"is not an IP address or network ({e})") from None


class EngineId(Parser):
    """An SNMP engine ID as hex (``80001f8804...``; ``0x`` and ``:`` or space separators allowed).

    Returns the lower-case hex digits alone ('' for an empty value), ready
    for ``bytes.fromhex``.
    """

    allowed = ("expected nothing (derived from the node name) or an engine ID of 5 to 32 "
               "octets in hex, e.g. 80001f8804636f6e6e6563746f72")

    def parse(self, raw: str, ctx: ParseContext) -> str:
        text = raw.strip()
        if text[:2] in ("0x", "0X"):
            text = text[2:]
        text = re.sub(r"[\s:]", "", text)
        if raw == "":
            return ""
        if not re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", text):
            raise self.invalid("is not an even number of hex digits")
        if not 5 <= len(text) // 2 <= 32:
            raise self.invalid(f"has {len(text) // 2} octets")
        return text.lower()


class TimeWindow(Duration):
    """An SNMPv3 time window in seconds (1 s to 1 day), or ``off`` (None)."""

    def __init__(self) -> None:
        super().__init__(1, 86400)
        self.allowed = ("expected a duration from 1s to 1d (e.g. 150, 150s, 5m), or off for no "
                        "time window (warned at start)")

    def parse(self, raw: str, ctx: ParseContext) -> float | None:
        if raw.lower() == "off":
            return None
        return super().parse(raw, ctx)


@register_section("traps")
@dataclasses.dataclass(frozen=True)
class TrapSettings:
    """``[traps]``: where traps are received, how they are classified, storm protection."""

    listen: tuple[str, ...] = setting(
        StrList(Endpoint(), min_items=1), "0.0.0.0:162, [::]:162",
        "UDP endpoints (address:port, [IPv6]:port) where traps and informs are received.",
    )
    communities: tuple[str, ...] = setting(
        StrList(Str(r"[^\s,]{1,255}", "a community of 1 to 255 characters without spaces or commas")),
        "public", "v1/v2c communities accepted; empty: any community.",
    )
    trusted_relays: tuple[str, ...] = setting(
        StrList(IpNetwork()), "",
        "Sources (addresses or networks) believed when a trap names another agent (v1 "
        "agent-addr, snmpTrapAddress.0): trap forwarders you run. From any other source a trap "
        "is attributed to its UDP source address and the claimed address is only kept as a "
        "varbind. Empty: no source is trusted.",
    )
    report_rate_per_source: float = setting(
        Float(0, 1_000_000), "10",
        "SNMPv3 Reports per second sent to one address (token bucket of one second's worth); "
        "beyond, they are suppressed (reports_suppressed_source). A Report answers unsigned "
        "datagrams with a bigger one, so a forged source would turn it into a reflector. "
        "0: no Reports (v3 informs then cannot discover our engine ID).",
    )
    report_rate_total: float = setting(
        Float(0, 1_000_000), "200",
        "SNMPv3 Reports per second sent in all (token bucket of one second's worth); beyond, "
        "suppressed (reports_suppressed_global). 0: no Reports.",
    )
    recv_buffer: int = setting(
        Size(64 * 1024, 1024**3), "64MiB",
        "UDP receive buffer of each listening socket (Linux grants twice the size to root, else "
        "caps it at net.core.rmem_max): 64MiB holds a few seconds of a 50,000/s storm while the "
        "daemon is descheduled (8MiB lost 26% of a 1,000,000-trap burst on a loaded machine).",
    )
    queue_size: int = setting(
        Int(1, 10_000_000), "100000",
        "Without a journal (journal_size = 0): traps waiting in memory to be handled before new "
        "ones are dropped (dropped_queue_full).",
    )
    queue_bytes: int = setting(
        Size(64 * 1024, 1024**3), "16MiB",
        "Without a journal: bytes of datagrams waiting in memory before new ones are dropped; "
        "with a journal, memory for the traps read from it and waiting for the publisher (a "
        "quarter of it in datagrams: each is also held decoded, as an event and encoded).",
    )
    max_datagram: int = setting(
        Int(484, 65_535), "16384",
        "Largest datagram kept, in bytes; a larger one is dropped before it is stored "
        "(dropped_oversized). 16384: four times the largest traps real agents send (a few KiB "
        "with long alarm texts; most fit one 1,500-byte frame), while a flood of 64 KiB junk "
        "datagrams cannot fill the journal 470 times faster than real traps. 65535 keeps all.",
    )
    journal_path: str | None = setting(
        FilePath(optional=True), "",
        "Folder of the trap journal (raw datagrams on disk until their event is accepted by "
        "the publisher; replayed after a crash); empty: journal-traps next to the [buffer] file.",
    )
    journal_size: int = setting(
        Size(0, 1024**4), "256MiB",
        "Largest size of the trap journal (about 1.5 million 136-byte traps, 30 s of a "
        "50,000/s storm); when full, new traps are dropped (dropped_journal_full) and a "
        "warning logged every 10 s. 0: no journal, traps wait in memory (queue_size, "
        "queue_bytes) and a crash loses those not yet published.",
    )
    definitions_source: str = setting(
        Choice("yaml", "sql"), "yaml", "Where trap definitions are read: yaml (a file) or sql (a table).",
    )
    definitions: str = setting(
        FilePath(), "traps.yaml", "YAML file of trap definitions; relative to the settings file's folder.",
    )
    definitions_url: Secret = setting(
        SecretText(OptionalUrl("sqlite:///traps.sqlite3")), "",
        "SQLAlchemy URL of the database of trap definitions (definitions_source = sql); empty otherwise.",
    )
    definitions_table: str = setting(
        sql_identifier(), "traps", "Table of trap definitions (definitions_source = sql).",
    )
    v3_users: str = setting(
        FilePath(), "trap-users.yaml",
        "YAML file of SNMPv3 users (relative to the settings file); a missing file: no v3.",
    )
    engine_id: str = setting(
        EngineId(), "", "Our SNMPv3 engine ID in hex (for informs); empty: derived from the node name.",
    )
    v3_time_window: float | None = setting(
        TimeWindow(), "150",
        "How far an SNMPv3 trap's time may lag behind the latest one of its sender engine (RFC "
        "3414 3.2.7 b) before it is refused (v3_not_in_time_window); a copy within it is "
        "refused too (v3_replayed). Widen it for senders whose traps arrive late; off: no "
        "time check for traps (warned at start).",
    )
    rate_limit: float = setting(
        Float(0, 1_000_000), "200", "Traps per second accepted from one source address; 0: no limit.",
    )
    rate_burst: int = setting(Int(1, 10_000_000), "1000", "Traps one source may send at once above the rate.")
    dedup_window: float = setting(
        Duration(0, 86400), "10s", "A trap repeated by one source within this time is dropped; 0: keep all.",
    )
    map_unknown: bool = setting(
        Bool(), "true", "Publish traps from senders not in the inventory (host = their address).",
    )
    mibs: tuple[str, ...] = setting(
        StrList(FilePath()), "",
        "Folders of MIB files (relative to the settings file) compiled with pysmi to name "
        "OIDs; empty: no MIB names (numeric OIDs always work).",
    )
    mib_cache: str = setting(
        FilePath(), "var/mib-cache",
        "Folder of the compiled MIBs (relative to the settings file), so a restart does not recompile.",
    )

    def journal_folder(self, buffer_path: str) -> str:
        """The journal's folder: ``journal_path``, or ``journal-traps`` beside ``buffer_path``."""
        if self.journal_path:
            return self.journal_path
        return os.path.join(os.path.dirname(buffer_path), "journal-traps")

    def __post_init__(self) -> None:
        if self.definitions_source == "sql" and not self.definitions_url.reveal():
            raise InvalidValue("expected a SQLAlchemy URL when definitions_source = sql", "nothing given",
                               key="definitions_url")
        if 0 < self.journal_size < 1024 * 1024:
            raise InvalidValue("expected 0 (no journal) or at least 1MiB", f"{self.journal_size} bytes",
                               key="journal_size")
        if len(set(self.listen)) != len(self.listen):
            raise InvalidValue("expected each endpoint once", "an endpoint is given twice", key="listen")
