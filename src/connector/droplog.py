"""Drops counted by reason and told in the log, one line at most every 10 s.

Whatever drops messages when it is full (the trap intake's queue or journal,
the publisher's disk buffer, a heartbeat the buffer refused) must say so in
the log, not only on ``/metrics``; but a line per drop, or per batch, is a
flood under a long outage, and the lines that matter scroll away. A
:class:`DropLog` counts every drop at once in the counter
``<counter_prefix><reason>`` (``dropped_<reason>`` by default) and writes one
warning line at most every ``interval`` seconds: the first drop after a quiet
interval is told at once, the ones after it by a single line at most
``interval`` later, with the counts by reason since the previous line, the
limits hit meanwhile and the totals::

    messages dropped by the publisher buffer /var/lib/centaure/buffer-traps.sqlite3
    (policy refuse_newest, max_messages=1000000 reached): 1200 refused
    (totals: dropped_refused 5300); next report in 10 s at most

A drop may carry an ``example`` (what was dropped and why, in words): the
first one of each reason since the previous line is told after the totals
(``first refused: ...``), so that a line also says what the drops looked like.

``stop()`` tells the counts not told yet. A DropLog runs in the reactor
thread: ``drop`` schedules its next line with the clock's ``callLater``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from connector.metrics import Counters

__all__ = ["DropLog", "DEFAULT_INTERVAL"]

#: Seconds between two drop lines of one DropLog, at least.
DEFAULT_INTERVAL = 10.0


class DropLog:
    """Drops counted by reason and logged: one warning line per ``interval`` at most.

    ``subject`` says what was dropped (default: ``"<counters' connector> dropped"``,
    e.g. ``traps dropped``); ``context`` is added in brackets after it (e.g. the
    policy that dropped them), followed by the limits hit since the previous line.
    """

    def __init__(self, clock: IReactorTime, counters: Counters, log: Logger,
                 interval: float = DEFAULT_INTERVAL, *, subject: str | None = None,
                 context: str = "", counter_prefix: str = "dropped_") -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.clock = clock
        self.counters = counters
        self.log = log
        self.interval = interval
        self.subject = subject if subject is not None else f"{counters.connector} dropped"
        self.context = context
        self.counter_prefix = counter_prefix
        #: Drops by reason since the last line.
        self.counts: dict[str, int] = {}
        # An ordered set: the limits hit since the last line, in the order first hit.
        self._limits: dict[str, None] = {}
        # The first example of each reason since the last line.
        self._examples: dict[str, str] = {}
        self._next = float("-inf")
        self._timer: Any = None

    def drop(self, reason: str, n: int = 1, limit: str | None = None,
             example: str | None = None) -> None:
        """Count ``n`` messages dropped for ``reason`` (``limit``: the limit hit, if any).

        ``example``: one of them in words, told if it is the first of its reason
        since the previous line.
        """
        if n > 0:
            self._add(reason, n, limit)
            if example is not None:
                self._examples.setdefault(reason, example)
            self._tell()

    def drop_all(self, counts: Mapping[str, int], limit: str | None = None) -> None:
        """Count the drops of one event by reason (``{reason: n}``), told in the same line."""
        dropped = False
        for reason, n in counts.items():
            if n > 0:
                self._add(reason, n, limit)
                dropped = True
        if dropped:
            self._tell()

    def _add(self, reason: str, n: int, limit: str | None) -> None:
        self.counters.inc(self.counter_prefix + reason, n)
        self.counts[reason] = self.counts.get(reason, 0) + n
        if limit:
            self._limits[limit] = None

    def _tell(self) -> None:
        """A line now if the last one is ``interval`` old, else one when it is."""
        now = self.clock.seconds()
        if now >= self._next:
            self._emit(now)
        elif self._timer is None:
            self._timer = self.clock.callLater(self._next - now, self._due)

    def stop(self) -> None:
        """Tell the drops not told yet, now; no line is scheduled afterwards."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.counts:
            self._emit(self.clock.seconds())

    def _due(self) -> None:
        self._timer = None
        if self.counts:
            self._emit(self.clock.seconds())

    def _emit(self, now: float) -> None:
        counts, prefix = self.counts, self.counter_prefix
        reasons = sorted(counts)
        text = ", ".join(f"{counts[r]} {r.replace('_', ' ')}" for r in reasons)
        totals = ", ".join(f"{prefix}{r} {int(self.counters.get(prefix + r))}" for r in reasons)
        details = [self.context] if self.context else []
        if self._limits:
            details.append(", ".join(self._limits) + " reached")
        subject = f"{self.subject} ({', '.join(details)})" if details else self.subject
        examples = "".join(f"; first {r.replace('_', ' ')}: {self._examples[r]}"
                           for r in reasons if r in self._examples)
        self.log.warn("{subject}: {counts} (totals: {totals}){examples}; next report in "
                      "{interval:.0f} s at most", subject=subject, counts=text, totals=totals,
                      examples=examples, interval=self.interval, dropped=dict(counts),
                      limits=list(self._limits))
        self.counts = {}
        self._limits = {}
        self._examples = {}
        self._next = now + self.interval
