"""SIGHUP: every connector of the process reloads what it can.

Several connectors may share a process (``centaure-all``): each chains its
reload to the handler installed before it, so that one signal reaches them
all, whatever order they started in.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

__all__ = ["reload_on_sighup"]


def reload_on_sighup(reactor: Any, reload: Callable[[], object]) -> None:
    """At every SIGHUP, call ``reload`` on the reactor thread, then the handler installed before.

    Outside the main thread (a test's worker) signals cannot be handled: nothing
    is installed.
    """
    try:
        previous = signal.getsignal(signal.SIGHUP)

        def on_hup(signum: int, frame: Any) -> None:
            reactor.callFromThread(reload)
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGHUP, on_hup)
    except ValueError:
        pass
