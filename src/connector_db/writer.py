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
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from connector.batching import BatchCommitter, NotCommitted
from connector.consumer import RejectedMessage
from connector.interfaces import IBatchStore, IMessageHandler, IStore
from connector.metrics import Counters
from centaure_shared.sql import error_summary, is_outage

__all__ = ["SqlWriter"]

_LAG_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0,
                5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


def _is_bad_data(exc: BaseException) -> bool:
    return isinstance(exc, (sa.exc.DataError, sa.exc.IntegrityError))


class _Outcome:
    """What the writer thread did with one batch."""

    __slots__ = ("written", "rejected", "seconds")

    def __init__(self) -> None:
        self.written: dict[str, int] = {}
        # Position in the batch -> the database's reason for refusing it.
        self.rejected: dict[int, str] = {}
        self.seconds = 0.0


@implementer(IMessageHandler, IBatchStore)
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
        self.counters = counters if counters is not None else Counters(name)
        # From the message's own timestamp (the poll, the trap) to its commit.
        self.lag = self.counters.histogram("store_lag_seconds", _LAG_BUCKETS)
        self.rows_written: dict[str, int] = {}
        # Batches by rows, one in flight: the single writer thread is the bottleneck.
        self.batches = BatchCommitter(
            reactor, self, name=f"sql-writer-{name}", batch_size=batch_size,
            batch_interval=batch_interval, is_outage=is_outage, retry_initial=retry_initial,
            retry_max=retry_max, describe=error_summary)
        self._add = self.batches.add

    @property
    def degraded(self) -> bool:
        """The database is away: nothing is acked until a batch commits."""
        return self.batches.degraded

    @property
    def last_error(self) -> str | None:
        """The last failed batch's reason, until a batch commits."""
        return self.batches.last_error

    # --- IMessageHandler -------------------------------------------------------

    def handle(self, message, delivery) -> defer.Deferred:
        """Queue ``message``; the Deferred fires once its batch is committed."""
        if self.batches.closed:
            return defer.fail(RuntimeError("SQL writer is closed"))
        try:
            prepared = self.store.prepare(message, delivery)
        except RejectedMessage as exc:
            self.counters.inc("rejected")
            return defer.fail(exc)
        self.counters.inc("messages")
        if prepared is None:  # a type this store keeps nothing of
            return defer.succeed(None)
        return self._add((prepared, message.ts), prepared.nrows)

    def health(self) -> dict[str, Any]:
        """A dict for /health and status messages."""
        return {
            "degraded": self.degraded,
            "last_error": self.last_error,
            "pending_messages": self.batches.pending + self.batches.in_flight,
            "pending_rows": self.batches.pending_size,
            "rows_by_table": dict(self.rows_written),
            "store_lag_p50": self.lag.quantile(0.5),
            "store_lag_p99": self.lag.quantile(0.99),
            **self.counters.snapshot(),
            **self.store.health(),
        }

    def close(self) -> defer.Deferred:
        """Write what is queued, then stop the thread.

        While the database is down nothing more can be written: the waiting
        messages fail (they are not acked, so the broker keeps them).
        """
        return self.batches.close(drain=True)

    def stop_pool(self) -> None:
        """Stop the writer thread at once (idempotent); queued work is dropped."""
        self.batches.stop()

    # --- IBatchStore ---------------------------------------------------------------

    def apply(self, values: list) -> list:
        """The batch's (prepared, ts) pairs, as queued."""
        return values

    def snapshot(self, applied: list) -> list:
        """What the store writes: the prepared messages."""
        return [prepared for prepared, _ in applied]

    def commit(self, prepared: list) -> _Outcome:
        """Write the batch (writer thread); a refused value is found by writing one at a time."""
        started = time.monotonic()
        outcome = _Outcome()
        try:
            outcome.written = self.store.write(prepared)
            outcome.seconds = time.monotonic() - started
            return outcome
        except Exception as exc:
            if is_outage(exc) or not _is_bad_data(exc):
                raise
        for i, p in enumerate(prepared):
            try:
                for table, n in self.store.write([p]).items():
                    outcome.written[table] = outcome.written.get(table, 0) + n
            except Exception as exc:
                if is_outage(exc) or not _is_bad_data(exc):
                    raise
                outcome.rejected[i] = error_summary(exc)
        outcome.seconds = time.monotonic() - started
        return outcome

    def committed(self, applied: list, outcome: _Outcome) -> list:
        """Count what was written; the messages the database refused are rejected."""
        self.counters.inc("batch_seconds", outcome.seconds)
        self.counters.inc("batches", 1)
        for table, n in outcome.written.items():
            self.rows_written[table] = self.rows_written.get(table, 0) + n
            self.counters.inc("rows_written", n)
        now = time.time()
        results: list = []
        for i, (_, ts) in enumerate(applied):
            reason = outcome.rejected.get(i)
            if reason is None:
                self.lag.observe(now - ts)
                results.append(None)
            else:
                self.counters.inc("rejected", 1)
                results.append(RejectedMessage(f"the database refused it: {reason}"))
        return results

    def failed(self, applied: list | None, work: list | None, failure: Failure) -> None:
        """A bug or the writer closing during an outage: the batch is not acked."""
        self.counters.inc("errors", 1)
        if failure.check(NotCommitted):  # stopped while the database was away
            self.log.warn("SQL writer stopped while the database was down; {n} messages "
                          "{error}", error=failure.getErrorMessage(), n=len(applied or ()))
            return
        self.log.failure("SQL batch of {n} messages failed; none acked", failure,
                         n=len(applied or ()))

    def outage(self, error: BaseException, attempt: int, delay: float, size: int) -> None:
        """The database is away: the batch is kept unacked and retried."""
        self.counters.inc("errors", 1)
        self.log.warn("database unavailable ({error}); {n} messages kept unacked, "
                      "retry {retry} in {delay:.1f}s", error=error_summary(error), n=size,
                      retry=attempt, delay=delay)
        self.counters.inc("outage_retries", 1)

    def recovered(self, attempts: int) -> None:
        """The database took a batch again."""
        self.log.info("database writable again after {n} retries", n=attempts)
