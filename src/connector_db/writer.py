"""The SQL writer: batches bus messages into transactions of an ``IStore``.

:class:`SqlWriter` provides ``IMessageHandler``. ``handle(message, delivery)``
asks the store to prepare the message's rows at once (a message that cannot
be stored fails its own Deferred there with ``RejectedMessage``, so the
consumer dead-letters it with the reason), queues them, and returns a
Deferred fired when the batch holding the message is committed: the message
is acked only then.

A batch is written when it holds ``batch_size`` rows or ``batch_interval``
seconds after its first message, in ONE transaction, on a dedicated
single-thread pool: the reactor thread never runs SQL, and batches are written
one at a time, in order.

What a failed batch means decides what happens to it:

* the database is unreachable (connection refused or lost, server gone,
  lock timeouts): the batch is kept and retried after a wait doubling from
  ``retry_initial`` to ``retry_max``; nothing is acked meanwhile, so the
  broker stops delivering once the prefetch window is full and everything
  else waits in the queue. The writer is ``degraded`` (``/health`` 503)
  until a batch commits;
* the database refused a value (data or integrity error): the batch is
  rolled back and its messages written one by one, so the bad one is
  rejected (dead-lettered with the database's reason) and the others stored;
* anything else (a bug): the batch's Deferreds fail, and the consumer
  retries then dead-letters them.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from connector.consumer import RejectedMessage
from connector.interfaces import IMessageHandler, IStore
from connector.metrics import Counters
from centaure_shared.sql import error_summary, is_outage
from connector.retry import backoff_delay

__all__ = ["SqlWriter"]

_LAG_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0,
                5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)




def _is_bad_data(exc: BaseException) -> bool:
    return isinstance(exc, (sa.exc.DataError, sa.exc.IntegrityError))


class _Item:
    """One message waiting for its batch."""

    __slots__ = ("deferred", "prepared", "nrows", "ts")

    def __init__(self, prepared, ts: float) -> None:
        self.deferred: defer.Deferred = defer.Deferred()
        self.prepared = prepared
        self.nrows: int = prepared.nrows
        self.ts = ts


class _Outcome:
    """What the writer thread did with one batch."""

    __slots__ = ("written", "outage", "rejected")

    def __init__(self) -> None:
        self.written: dict[str, int] = {}
        self.outage: BaseException | None = None
        # Position in the batch -> the database's reason for refusing it.
        self.rejected: dict[int, str] = {}


@implementer(IMessageHandler)
class SqlWriter:
    """Batched, ordered, outage-proof writing of messages through a store."""

    log = Logger()

    def __init__(self, store: IStore, reactor, batch_size: int = 5000,
                 batch_interval: float = 0.2, retry_initial: float = 1.0,
                 retry_max: float = 30.0, name: str = "main",
                 counters: Counters | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.store = store
        self.reactor = reactor
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.degraded = False
        self.last_error: str | None = None
        self.counters = counters if counters is not None else Counters(name)
        # From the message's own timestamp (the poll, the trap) to its commit.
        self.lag = self.counters.histogram("store_lag_seconds", _LAG_BUCKETS)
        self.rows_written: dict[str, int] = {}
        self._pending: list[_Item] = []
        self._pending_rows = 0
        self._timer = None
        self._retry_call = None
        self._retries = 0
        # The batch being written or waiting for a retry: at most one.
        self._batch: list[_Item] | None = None
        self._idle: list[defer.Deferred] = []
        self._pool = ThreadPool(1, 1, name=f"sql-writer-{name}")
        self._pool.start()
        self._closed = False

    # --- IMessageHandler -------------------------------------------------------

    def handle(self, message, delivery) -> defer.Deferred:
        """Queue ``message``; the Deferred fires once its batch is committed."""
        if self._closed:
            return defer.fail(RuntimeError("SQL writer is closed"))
        try:
            prepared = self.store.prepare(message, delivery)
        except RejectedMessage as exc:
            self.counters.inc("rejected")
            return defer.fail(exc)
        self.counters.inc("messages")
        if prepared is None:  # a type this store keeps nothing of
            return defer.succeed(None)
        item = _Item(prepared, message.ts)
        self._pending.append(item)
        self._pending_rows += item.nrows
        if self._pending_rows >= self.batch_size:
            self._flush()
        elif self._timer is None and self._batch is None:
            self._timer = self.reactor.callLater(self.batch_interval, self._on_timer)
        return item.deferred

    def health(self) -> dict[str, Any]:
        """A dict for /health and status messages."""
        return {
            "degraded": self.degraded,
            "last_error": self.last_error,
            "pending_messages": len(self._pending) + len(self._batch or ()),
            "pending_rows": self._pending_rows,
            "rows_by_table": dict(self.rows_written),
            "store_lag_p50": self.lag.quantile(0.5),
            "store_lag_p99": self.lag.quantile(0.99),
            **self.counters.snapshot(),
            **self.store.health(),
        }

    @defer.inlineCallbacks
    def close(self):
        """Write what is queued, then stop the thread.

        While the database is down nothing more can be written: the waiting
        messages fail (they are not acked, so the broker keeps them).
        """
        self._closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        while self._pending or self._batch is not None:
            if self._retry_call is not None:
                self._abandon(RuntimeError("SQL writer stopped while the database was down"))
                break
            if self._batch is not None:
                d = defer.Deferred()
                self._idle.append(d)
                yield d
            else:
                self._flush()
        self.stop_pool()

    def stop_pool(self) -> None:
        """Stop the writer thread at once (idempotent); queued work is dropped."""
        self._closed = True
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        if not self._pool.joined:
            self._pool.stop()

    # --- batching ----------------------------------------------------------------

    def _on_timer(self) -> None:
        self._timer = None
        self._flush()

    def _flush(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._batch is not None or not self._pending:
            return  # the end of the running batch starts the next one
        # Take at most batch_size rows (at least one message).
        taken, rows = [], 0
        while self._pending and (not taken or rows + self._pending[0].nrows <= self.batch_size):
            item = self._pending.pop(0)
            taken.append(item)
            rows += item.nrows
        self._pending_rows -= rows
        self._batch = taken
        self._write(taken)

    def _write(self, batch: list[_Item]) -> None:
        self._retry_call = None
        started = time.monotonic()
        d = threads.deferToThreadPool(self.reactor, self._pool, self._write_in_thread,
                                      [it.prepared for it in batch])
        d.addBoth(self._batch_done, batch, started)

    def _batch_done(self, result, batch: list[_Item], started: float) -> None:
        self.counters.inc("batch_seconds", time.monotonic() - started)
        if isinstance(result, Failure):
            self._batch_failed(result, batch)
        elif result.outage is not None:
            self._outage(result.outage, batch)
            return None
        else:
            self._committed(result, batch)
        self._batch = None
        self._next()
        return None

    def _committed(self, outcome: _Outcome, batch: list[_Item]) -> None:
        self.counters.inc("batches", 1)
        if self.degraded:
            self.log.info("database writable again after {n} retries", n=self._retries)
        self.degraded = False
        self.last_error = None
        self._retries = 0
        for table, n in outcome.written.items():
            self.rows_written[table] = self.rows_written.get(table, 0) + n
            self.counters.inc("rows_written", n)
        now = time.time()
        for i, item in enumerate(batch):
            reason = outcome.rejected.get(i)
            if reason is None:
                self.lag.observe(now - item.ts)
                item.deferred.callback(None)
            else:
                self.counters.inc("rejected", 1)
                item.deferred.errback(RejectedMessage(f"the database refused it: {reason}"))

    def _batch_failed(self, failure: Failure, batch: list[_Item]) -> None:
        self.counters.inc("errors", 1)
        self.last_error = failure.getErrorMessage()
        self.log.failure("SQL batch of {n} messages failed; none acked", failure, n=len(batch))
        for item in batch:
            item.deferred.errback(failure)

    def _outage(self, exc: BaseException, batch: list[_Item]) -> None:
        self.counters.inc("errors", 1)
        self._retries += 1
        self.degraded = True
        self.last_error = error_summary(exc)
        if self._closed:
            self._abandon(exc)
            return
        delay = backoff_delay(self._retries, self.retry_initial, self.retry_max)
        self.log.warn("database unavailable ({error}); {n} messages kept unacked, "
                      "retry {retry} in {delay:.1f}s", error=self.last_error, n=len(batch),
                      retry=self._retries, delay=delay)
        self.counters.inc("outage_retries", 1)
        self._retry_call = self.reactor.callLater(delay, self._write, batch)

    def _abandon(self, exc: BaseException) -> None:
        """Fail the waiting batch and every queued message (not acked)."""
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        items = (self._batch or []) + self._pending
        self._batch, self._pending, self._pending_rows = None, [], 0
        for item in items:
            item.deferred.errback(Failure(RuntimeError(f"not written: {error_summary(exc)}")))
        self._wake_idle()

    def _next(self) -> None:
        if self._pending:
            if self._pending_rows >= self.batch_size or self._closed:
                self._flush()
            elif self._timer is None:
                self._timer = self.reactor.callLater(self.batch_interval, self._on_timer)
        self._wake_idle()

    def _wake_idle(self) -> None:
        waiting, self._idle = self._idle, []
        for d in waiting:
            d.callback(None)

    # --- writer thread -------------------------------------------------------------

    def _write_in_thread(self, prepared: list) -> _Outcome:
        outcome = _Outcome()
        try:
            outcome.written = self.store.write(prepared)
            return outcome
        except Exception as exc:
            if is_outage(exc):
                outcome.outage = exc
                return outcome
            if not _is_bad_data(exc):
                raise
        # A value the database refused: find it by writing one message at a time.
        for i, p in enumerate(prepared):
            try:
                for table, n in self.store.write([p]).items():
                    outcome.written[table] = outcome.written.get(table, 0) + n
            except Exception as exc:
                if is_outage(exc):
                    return _outage_outcome(exc)
                if not _is_bad_data(exc):
                    raise
                outcome.rejected[i] = error_summary(exc)
        return outcome


def _outage_outcome(exc: BaseException) -> _Outcome:
    out = _Outcome()
    out.outage = exc
    return out


