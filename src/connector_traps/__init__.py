"""The SNMP trap and inform receiver connector (centaure-traps)."""

from connector.service import Options, makeService as _make

__all__ = ["Options", "makeService"]


def makeService(options):
    """The trap receiver alone in its process (``twistd centaure-traps``)."""
    return _make(options, ["traps"], "traps")
