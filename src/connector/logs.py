"""Applying ``[logging]`` to a process that twistd has already set up.

twistd installs its log observers before it calls a plugin's ``makeService``;
the level filter is therefore put around the observers already there. The
``json`` format writes one JSON object per event to standard output (run
under ``twistd -n``, as systemd and containers do, and let them collect it).
"""

from __future__ import annotations

import sys

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
    jsonFileLogObserver,
)

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warning": LogLevel.warn,
           "error": LogLevel.error, "critical": LogLevel.critical}


def configure_logging(level: str, fmt: str, publisher=globalLogPublisher) -> None:
    """Filter below ``level``; switch to JSON lines when ``fmt`` is ``json``."""
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS.get(level.lower(), LogLevel.info))
    # The publisher keeps no public list of its observers; this is the one
    # place that reaches for it, and it degrades to "no filtering" if gone.
    observers = list(getattr(publisher, "_observers", []))
    if fmt == "json":
        replacements = [jsonFileLogObserver(sys.stdout)]
    else:
        replacements = observers
    for observer in observers:
        publisher.removeObserver(observer)
    for observer in replacements:
        publisher.addObserver(FilteringLogObserver(observer, [predicate]))
