"""The SNMP poller connector (centaure-snmp)."""

from connector.service import Options, makeService as _make

__all__ = ["Options", "makeService"]


def makeService(options):
    """The poller alone in its process (``twistd centaure-snmp``)."""
    return _make(options, ["snmp"], "snmp")
