"""``twistd centaure-all``: every connector that is installed, in one process."""

from connector.service import Options, available_connectors, makeService as _make

__all__ = ["Options", "makeService"]


def makeService(options):
    """Every available connector, sharing one bus connection."""
    return _make(options, available_connectors(), "all")
