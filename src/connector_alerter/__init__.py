"""The alerter connector (centaure-alerter): threshold rules on the perf stream, notifications."""

from connector.service import Options, makeService as _make

__all__ = ["Options", "makeService"]


def makeService(options):
    """The alerter alone in its process (``twistd centaure-alerter``)."""
    return _make(options, ["alerter"], "alerter")
