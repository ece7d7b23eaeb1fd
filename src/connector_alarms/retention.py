"""Old rows of the correlator's own tables go on schedule.

What grows on a long-running site, table by table (``[correlator]
table_prefix``, ``corr_`` by default):

* ``alarms``: a cleared alarm is *forgotten* ``keep_cleared`` after it
  cleared (never while it is shown as flapping): :meth:`Correlator.tick
  <connector_alarms.machine.Correlator.tick>` drops it from memory and the
  next commit deletes its row. Rows the memory never held are never
  forgotten that way: an alarm that cleared more than ``keep_cleared``
  before a start, or before a partition was taken over (``load`` leaves
  such rows unread), or a row of a node that stopped before its tick
  forgot it. Those rows stayed for ever; :class:`Purger` deletes them.
* ``outbox``: a row lives until the broker confirms its ``alarm`` message
  (the next commit deletes it): bounded by the messages in flight.
* ``seen_ids``: per host a bounded window of message ids
  (:data:`~connector_alarms.model.SEEN_IDS_PER_HOST`), whose old chunks the
  save that adds a new one deletes.
* ``hosts`` (and a :class:`~connector_alarms.model.HostState` in memory, with
  its seen-ids window): one per host ever seen, not purged. Their
  ``snapshot_ts`` and seen ids are what keep a late table snapshot or a
  redelivered message from raising again what cleared, and they cost a
  row per device of the site, not per event.

Retention: ``[correlator] keep_cleared`` (1 day by default), one duration
for memory and rows, no second key. The correlator's tables are its working
state: ``centaure alarms --all`` and the console's alarm page show the
cleared alarms the correlator still keeps, and once ``keep_cleared`` has
passed the correlator deletes them itself; a longer retention for the rows
would only keep the rows no start ever reads again. The history of every
alarm (each raise, update and clear) is the SQL writer's, kept ``[retention]
alarm_history`` (365 days by default); a site that wants cleared alarms
longer on the board raises ``keep_cleared`` (up to 365 days).

Where and when: in the correlator itself, every ``[correlator]
purge_interval`` (1 hour by default; a first pass once the state is
loaded), on a thread, in transactions of at most
:data:`~connector_alarms.store.PURGE_BATCH` rows (SQLite's single writer,
and MariaDB's row locks, are held for one small batch at a time). A row
goes once it is cleared (``cleared_at``, else ``changed_ts``) more than
``keep_cleared`` plus :data:`GRACE` ago, not active, not flapping. One log
line per pass that deleted rows; ``purged_alarms`` and ``purge_errors`` on
``/metrics``.

Several nodes (``[bus] partitions``): each node purges the rows of the hosts
it owns. Nothing is lost, whoever holds what:

* a purged row is one that no load returns any more (a load reads the rows
  cleared since ``now - keep_cleared``, later than the purge's cut-off), so
  a node taking a partition over reads exactly what it would have read;
* the owner holds such an alarm in memory only until its next tick forgets
  it (:data:`GRACE` is far longer than ``tick_interval``); if the alarm
  changes before that (raised again, commanded), its row differs from what
  the store last wrote and the next commit writes it whole: the row comes
  back. The same holds for a late commit of a previous owner;
* a cleared alarm shown as flapping is never purged (consumers still see it
  as active until flapping stops), and ``load`` always reads it.

An alarm raised again after its row was purged is a new alarm (its ref
comes from host, name and identity; memory does not hold it), raised with
count 1 and published, as after the correlator forgot it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task, threads
from twisted.logger import Logger

from centaure_shared.sql import error_summary

__all__ = ["Purger", "GRACE"]

#: How long past ``keep_cleared`` a cleared alarm's row waits for the purge:
#: its owner's tick forgets it (and deletes the row) long before.
GRACE = 3600.0


class Purger:
    """Deletes the rows of old cleared alarms every ``interval`` seconds (module docstring).

    ``purge(before, keep)`` is the blocking delete
    (:meth:`connector_alarms.store.StateStore.purge_cleared`), run through
    ``run`` (a thread); ``keep_cleared()`` the current setting (a reload may
    change it); ``keep`` the hosts this node purges (None: every host).
    ``counters`` get ``purged_alarms`` and ``purge_errors``. A failed pass
    is logged in one line and the next one tries again.
    """

    log = Logger()

    def __init__(self, reactor: Any, purge: Callable[..., int],
                 keep_cleared: Callable[[], float], counters: Any, interval: float,
                 keep: Callable[[str], bool] | None = None,
                 clock: Callable[[], float] = time.time,
                 run: Callable[..., defer.Deferred] = threads.deferToThread) -> None:
        self.reactor = reactor
        self.purge = purge
        self.keep_cleared = keep_cleared
        self.counters = counters
        self.interval = interval
        self.keep = keep
        self.clock = clock
        self.run = run
        #: Rows deleted by all passes, and passes done (for tests and health).
        self.deleted = 0
        self.passes = 0
        self._loop: task.LoopingCall | None = None
        self._running: defer.Deferred | None = None

    def start(self) -> None:
        """A pass now, then one every ``interval`` seconds."""
        self._loop = task.LoopingCall(self.run_once)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True)

    def set_interval(self, interval: float) -> None:
        """Run every ``interval`` seconds from now on (a reload)."""
        if interval == self.interval:
            return
        self.interval = interval
        if self._loop is not None and self._loop.running:
            self._loop.stop()
            self._loop = task.LoopingCall(self.run_once)
            self._loop.clock = self.reactor
            self._loop.start(interval, now=False)

    def run_once(self) -> defer.Deferred:
        """One pass (skipped while one runs); fires with the rows deleted. Never fails."""
        if self._running is not None:
            return defer.succeed(0)
        before = self.clock() - self.keep_cleared() - GRACE
        d = self.run(self.purge, before, self.keep)
        self._running = d

        def done(n: int) -> int:
            self.passes += 1
            if n:
                self.deleted += n
                self.counters.inc("purged_alarms", n)
                self.log.info("correlator purge: {n} rows of alarms cleared before {before} "
                              "deleted ([correlator] keep_cleared)", n=n,
                              before=time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                   time.gmtime(before)))
            return n

        def failed(failure) -> int:
            self.counters.inc("purge_errors")
            self.log.warn("correlator purge failed, trying again in {interval:.0f} s: {error}",
                          interval=self.interval, error=error_summary(failure.value))
            return 0

        def ended(result: int) -> int:
            self._running = None
            return result

        d.addCallbacks(done, failed)
        d.addBoth(ended)
        return d

    def stop(self) -> defer.Deferred:
        """Stop the timer; fires once a pass running now has ended."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        running = self._running
        if running is None:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        running.addBoth(lambda r: (d.callback(None), r)[1])
        return d
