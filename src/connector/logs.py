"""Applying ``[logging]`` to a process, whoever sets up its log observers.

twistd calls a plugin's ``makeService`` *before* it begins logging: the
observers it writes with (standard output under ``-n``, ``--logfile``,
``--syslog``) only exist once it calls ``globalLogBeginner.beginLoggingTo``.
Until then the publisher holds the beginner's temporary observer (a buffer
of early events and a copy of critical ones to standard error). So when
logging has not begun yet, the level filter and the format are applied to
the observers twistd hands to ``beginLoggingTo``; when it has (``centaure
demo`` begins logging to its own file first), to the observers already
there. The ``json`` format writes one JSON object per event to standard
output (run under ``twistd -n``, as systemd and containers do, and let them
collect it).
"""

from __future__ import annotations

import sys
from typing import Iterable

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogBeginner,
    LogLevel,
    LogLevelFilterPredicate,
    LoggingFile,
    LogPublisher,
    globalLogBeginner,
    globalLogPublisher,
    jsonFileLogObserver,
)

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warning": LogLevel.warn,
           "error": LogLevel.error, "critical": LogLevel.critical}


def _real_stdout():
    """Standard output, even once twistd has redirected ``sys.stdout`` into the log.

    JSON lines written to the redirected stream would come back as log
    events, themselves written as JSON lines, and so on.
    """
    if isinstance(sys.stdout, LoggingFile) and sys.__stdout__ is not None:
        return sys.__stdout__
    return sys.stdout


def configure_logging(level: str, fmt: str, publisher: LogPublisher = globalLogPublisher,
                      beginner: LogBeginner | None = None) -> None:
    """Filter below ``level``; switch to JSON lines when ``fmt`` is ``json``.

    ``beginner`` is the one that begins logging on ``publisher`` (by default
    Twisted's global one for the global publisher, else none).
    """
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS.get(level.lower(), LogLevel.info))

    def wrap(observers: Iterable[ILogObserver]) -> list[ILogObserver]:
        chosen = [jsonFileLogObserver(_real_stdout())] if fmt == "json" else list(observers)
        return [FilteringLogObserver(observer, [predicate]) for observer in chosen]

    if beginner is None and publisher is globalLogPublisher:
        beginner = globalLogBeginner
    # Twisted offers no public "has logging begun?"; the beginner drops its
    # temporary observer when it begins. Degrades to "begun" if that changes.
    if beginner is not None and getattr(beginner, "_temporaryObserver", None) is not None:
        # The class's own method: a second call before logging begins replaces
        # the first one's settings instead of stacking filters.
        begin = type(beginner).beginLoggingTo.__get__(beginner)

        def begin_filtered(observers: Iterable[ILogObserver], *args, **kwargs) -> None:
            vars(beginner).pop("beginLoggingTo", None)  # once: the class's method again
            begin(wrap(observers), *args, **kwargs)

        beginner.beginLoggingTo = begin_filtered  # type: ignore[method-assign]
        return
    # The publisher keeps no public list of its observers; this is the one
    # place that reaches for it, and it degrades to "no filtering" if gone.
    observers = list(getattr(publisher, "_observers", []))
    for observer in observers:
        publisher.removeObserver(observer)
    for observer in wrap(observers):
        publisher.addObserver(observer)

