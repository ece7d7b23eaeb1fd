"""When each device is polled: per-device intervals, spread starts, bounds.

Every device has its own interval; its first poll is offset by a stable hash
of its name so that a fleet's polls spread over the interval instead of
starting together. A global semaphore bounds concurrent polls; a device is
never polled twice at once (a poll still running at the next tick is an
*overrun*: skipped and counted). A device that stops answering is retried
with exponential backoff (capped at its interval times ``max_backoff``) and
returns to its interval as soon as a poll succeeds.

The scheduler keeps one ``DeviceSchedule`` per host: all of a host's timing
state is in one place, so that a host could be handed to another node whole.
:meth:`Scheduler.release` lets hosts go for that: their polls still waiting
for a slot are cancelled and the caller learns when the running ones are done.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from connector.metrics import Counters


def spread_offset(name: str, interval: float) -> float:
    """A stable offset in [0, interval) for ``name`` (same on every node and run)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") / 2**64) * interval


@dataclass
class DeviceSchedule:
    """The timing state of one host."""

    name: str
    interval: float
    running: bool = False
    failures: int = 0
    call: object = None
    last_start: float = 0.0  # when the last poll began: a recovered device's next tick is due from it
    started: bool = False  # the running poll has its slot (not waiting on the semaphore)
    pending: object = None  # the running poll's Deferred
    waiters: list = field(default_factory=list)  # told when the running poll is done


class Scheduler:
    """Runs ``poll(name)`` for every scheduled host at its interval."""

    log = Logger()

    def __init__(self, clock, poll: Callable[[str], Awaitable[bool]], counters: Counters,
                 max_concurrent: int = 200, max_backoff: int = 8) -> None:
        self.clock = clock
        self.poll = poll
        self.counters = counters
        self.semaphore = defer.DeferredSemaphore(max_concurrent)
        self.max_backoff = max_backoff
        self.schedules: dict[str, DeviceSchedule] = {}

    def set_devices(self, intervals: dict[str, float]) -> None:
        """Schedule exactly these hosts (added, removed, interval changed)."""
        for name in list(self.schedules):
            if name not in intervals:
                self.remove(name)
        for name, interval in intervals.items():
            current = self.schedules.get(name)
            if current is not None and current.interval == interval:
                continue
            if current is not None:
                self.remove(name)
            s = self.schedules[name] = DeviceSchedule(name, interval)
            s.call = self.clock.callLater(spread_offset(name, interval), self._tick, s)
        self.counters.set("devices_scheduled", len(self.schedules))

    def remove(self, name: str) -> None:
        """Stop polling ``name`` (an in-flight poll finishes and is not rescheduled)."""
        s = self.schedules.pop(name, None)
        if s is not None and s.call is not None and s.call.active():
            s.call.cancel()

    def release(self, names) -> defer.Deferred:
        """Stop polling ``names``; fires once their polls that had begun are done.

        A poll still waiting for a slot (``max_concurrent``) is cancelled: it
        never begins.
        """
        waits = []
        for name in names:
            s = self.schedules.get(name)
            self.remove(name)
            if s is None or not s.running:
                continue
            if not s.started:
                s.pending.cancel()
                continue
            waiter = defer.Deferred()
            s.waiters.append(waiter)
            waits.append(waiter)
        return defer.DeferredList(waits) if waits else defer.succeed(None)

    def stop(self) -> None:
        """Cancel every pending tick."""
        for name in list(self.schedules):
            self.remove(name)

    def _tick(self, s: DeviceSchedule) -> None:
        if self.schedules.get(s.name) is not s:
            return
        delay = s.interval
        if s.failures:
            delay = min(s.interval * 2 ** (s.failures - 1), s.interval * self.max_backoff)
            delay = max(delay, s.interval)
        s.call = self.clock.callLater(delay, self._tick, s)
        if s.running:
            self.counters.inc("overruns")
            self.log.warn("poll of {name} still running after {interval}s: skipped",
                          name=s.name, interval=s.interval)
            return
        s.running = True
        s.started = False
        s.last_start = self.clock.seconds()
        d = s.pending = self.semaphore.run(self._begin, s)
        d.addBoth(self._done, s)

    def _begin(self, s: DeviceSchedule) -> defer.Deferred:
        s.started = True
        return defer.ensureDeferred(self.poll(s.name))

    def _done(self, result, s: DeviceSchedule) -> None:
        s.running = s.started = False
        s.pending = None
        waiters, s.waiters = s.waiters, []
        for waiter in waiters:
            waiter.callback(None)
        if isinstance(result, Failure) and result.check(defer.CancelledError) \
                and self.schedules.get(s.name) is not s:
            return  # released before it began
        now = self.clock.seconds()
        if isinstance(result, bool) and result:
            recovered = s.failures > 0
            s.failures = 0
            # The next tick was planned with the backed-off delay before this
            # poll answered: a device back up returns to its interval at once.
            if recovered and self.schedules.get(s.name) is s and s.call is not None and s.call.active():
                due = max(s.last_start + s.interval, now)
                if s.call.getTime() > due:
                    s.call.reset(due - now)
        else:
            if not isinstance(result, bool):
                self.log.failure("poll of {name} failed", result, name=s.name)
            s.failures += 1
