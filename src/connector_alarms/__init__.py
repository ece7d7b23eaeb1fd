"""The alarm correlator connector (centaure-correlator): events, snapshots and thresholds to alarms."""

from connector.service import Options, makeService as _make

__all__ = ["Options", "makeService"]


def makeService(options):
    """The correlator alone in its process (``twistd centaure-correlator``)."""
    return _make(options, ["correlator"], "correlator")
