"""Retrying a blocking start-up step (schema migration, state load) while the database is away.

Connectors that own SQL state (the writer, the correlator) must not take
messages from the bus before their tables are usable; they run their start-up
step on a thread and, while it fails for a reason that may pass (database
down, schema not migrated yet), wait with a doubling, jittered delay.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from twisted.internet import task, threads
from twisted.logger import Logger

__all__ = ["backoff_delay", "retry_in_thread"]

_log = Logger()


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """The wait before retry ``attempt`` (1-based): doubling from ``initial`` up to ``maximum``.

    Jittered down by up to 20% so that several processes restarted together
    do not retry in step.
    """
    return min(initial * 2 ** (attempt - 1), maximum) * random.uniform(0.8, 1.0)


async def retry_in_thread(reactor, step: Callable[[], Any], transient: Callable[[BaseException], bool],
                          initial: float, maximum: float, what: str,
                          stopping: Callable[[], bool],
                          on_error: Callable[[BaseException], None] = lambda exc: None) -> Any:
    """Run ``step`` in a thread until it succeeds; None if ``stopping()`` turns true first.

    An exception for which ``transient`` is false is raised at once.
    """
    attempt = 0
    while not stopping():
        try:
            return await threads.deferToThread(step)
        except Exception as exc:
            if not transient(exc):
                raise
            attempt += 1
            on_error(exc)
            delay = backoff_delay(attempt, initial, maximum)
            _log.warn("{what} not ready ({error}); retry {n} in {delay:.1f}s", what=what,
                      error=str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__,
                      n=attempt, delay=delay)
            await task.deferLater(reactor, delay, lambda: None)
    return None
