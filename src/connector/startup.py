"""Start-up failures of a twistd daemon: one clear line and a non-zero exit code.

A failure found while building the services (a bad setting, an unreadable
inventory) is raised as :class:`SystemExit` with its one line: twistd has not
started the reactor yet, and Python prints the line and exits with 1.

A failure found once the reactor runs (the buffer file is locked by another
process, the database schema is not the one this code needs) goes through
:func:`fail`: the line is logged at critical level, the reactor stops cleanly
(every service's ``stopService`` runs, logs are flushed) and the process then
exits with 1. twistd itself always exits with 0 once its reactor has stopped,
and offers no hook to change that; the exit code is therefore applied by an
``atexit`` handler, registered when this module is imported (before the
libraries twistd loads afterwards register theirs), so it runs after the
others and only skips the interpreter's own final clean-up.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import Any

from twisted.logger import Logger

__all__ = ["StartupError", "exit_code", "fail", "fail_start", "startup_line"]

_log = Logger(namespace="connector.startup")

#: The exit code the process ends with once its reactor has stopped (0: none set).
_exit_code = 0


class StartupError(Exception):
    """A connector cannot start; the message says what is wrong, in one line."""


def startup_line(process: str, reason: object) -> str:
    """``centaure-<process>: cannot start: <reason>`` on one line.

    ``process`` is the connector or process name (``db``, ``all``); a
    multi-line reason is joined so that the line stays one log record.
    """
    text = str(reason).strip() or type(reason).__name__
    text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return f"centaure-{process}: cannot start: {text}"


def exit_code() -> int:
    """The exit code set by :func:`fail` (0 when nothing failed)."""
    return _exit_code


def fail(process: str, reason: object, reactor=None, code: int = 1) -> None:
    """Log the one line, stop the reactor and make the process exit with ``code``.

    Safe to call more than once (the first reason is the one logged as the
    cause; later ones are logged too, the exit code stays non-zero).
    """
    global _exit_code
    if reactor is None:
        from twisted.internet import reactor
    _log.critical("{line}", line=startup_line(process, reason))
    if _exit_code:
        return
    _exit_code = code
    if reactor.running:
        reactor.stop()
    else:
        # Before the reactor runs (a synchronous startService): stop it as it starts.
        reactor.callWhenRunning(reactor.stop)


def fail_start(process: str, failure: Any, reason: str, reactor=None) -> None:
    """A service's asynchronous start-up step failed for good: :func:`fail` with ``reason``.

    The traceback helps a developer, not an operator: it is logged at debug
    level only, before the one line.
    """
    _log.debug("centaure-{process} start failed: {tb}", process=process,
               tb=failure.getTraceback())
    fail(process, reason, reactor)


def _apply_exit_code() -> None:
    """At interpreter exit: flush what was written, then exit with the code set."""
    if not _exit_code:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # closed or broken: nothing more can be said there
    os._exit(_exit_code)


atexit.register(_apply_exit_code)
