"""Batched commits: queue values, commit them in batches, ack each after its batch.

:class:`BatchCommitter` is the loop the SQL-backed connectors share; what a
batch does is an :class:`~connector.interfaces.IBatchStore`'s:

* a value is queued with :meth:`BatchCommitter.add` and its Deferred fires
  once the batch holding it is committed and ``committed`` has ended (a
  consumer acks only then);
* a batch starts when the queued values reach ``batch_size`` (a size given
  per value: rows, messages), when they fill the bus's ``prefetch`` window
  with those in flight (nothing more can arrive before an ack), when the
  oldest has waited ``batch_interval`` seconds, or when :meth:`flush` forces
  one; ``batch_size=None`` takes everything queued at once, as soon as the
  previous batch has ended (a group commit);
* up to ``pipeline`` batches are in flight: the next one is applied while
  the previous commits and publishes, but commits run one at a time, in
  order, through ``run`` (a dedicated one-thread pool by default);
* a commit that fails because the database is away (``is_outage``) is
  retried, the same work, after a wait doubling from ``retry_initial`` to
  ``retry_max``; nothing is acked meanwhile, and :attr:`degraded` is True
  until a commit succeeds. Any other failure fails the batch's values
  (with ``fail_pending``, the queued ones too: they were built on it).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from connector.retry import backoff_delay

__all__ = ["BatchCommitter", "NotCommitted"]


class NotCommitted(RuntimeError):
    """Closed while the database was away: the batch is given up, not acked."""


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:500]


class _Item:
    """One queued value waiting for its batch."""

    __slots__ = ("value", "size", "arrived", "deferred")

    def __init__(self, value: Any, size: int, arrived: float) -> None:
        self.value = value
        self.size = size
        #: Reactor time of its arrival: batch_interval is counted from here.
        self.arrived = arrived
        self.deferred: defer.Deferred = defer.Deferred()


class BatchCommitter:
    """Runs an ``IBatchStore``'s batches: filling, ordered commits, outage retries, acks."""

    log = Logger()

    def __init__(self, reactor, store, *, name: str, batch_size: int | None = None,
                 batch_interval: float = 0.0, pipeline: int = 1, prefetch: int | None = None,
                 run: Callable[..., defer.Deferred] | None = None,
                 is_outage: Callable[[BaseException], bool] | None = None,
                 retry_initial: float = 1.0, retry_max: float = 30.0,
                 describe: Callable[[BaseException], str] = _first_line,
                 fail_pending: bool = False) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.reactor = reactor
        self.store = store
        self.name = name
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self.pipeline = pipeline
        self.prefetch = prefetch
        self.is_outage = is_outage
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.describe = describe
        self.fail_pending = fail_pending
        #: The database is away: the running commit waits to be retried.
        self.degraded = False
        self.last_error: str | None = None
        #: Outage retries since the last successful commit.
        self.retries = 0
        self._pool: ThreadPool | None = None
        self._run = run if run is not None else self._run_in_pool
        self._pending: list[_Item] = []
        self._pending_size = 0
        self._inflight = 0
        self._unacked = 0  # values in the batches in flight
        # The queued values were ready while the pipeline was full: start them
        # as soon as a batch ends, not after batch_interval.
        self._sealed = False
        self._forced = False
        self._flushers: list[defer.Deferred] = []
        # Held from snapshot to the end of the commit: commits in order, one at a time.
        self._commit_lock = defer.DeferredLock()
        self._timer = None
        self._sleep: defer.Deferred | None = None
        self._idle: list[defer.Deferred] = []
        self._closing = False
        self._drain = True

    # --- queueing ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` or :meth:`stop` was called."""
        return self._closing

    @property
    def pending(self) -> int:
        """Values queued, not yet in a batch."""
        return len(self._pending)

    @property
    def pending_size(self) -> int:
        """The summed size of the queued values."""
        return self._pending_size

    @property
    def in_flight(self) -> int:
        """Values in the batches being applied, committed or published."""
        return self._unacked

    def add(self, value: Any, size: int = 1) -> defer.Deferred:
        """Queue ``value``; the Deferred fires once its batch is committed (see the module)."""
        item = _Item(value, size, self.reactor.seconds())
        pending = self._pending
        pending.append(item)
        self._pending_size += size
        # The common case first, without _ready()'s calls: the hot path of a busy writer.
        limit = self.batch_size
        if (limit is not None and self._pending_size < limit and not self._closing
                and (self.prefetch is None or len(pending) + self._unacked < self.prefetch)):
            if self._timer is None:
                self._timer = self.reactor.callLater(self.batch_interval, self._kick)
        elif self._ready():
            self._kick()
        return item.deferred

    def flush(self) -> defer.Deferred:
        """A batch now, even an empty one; fires (never fails) once it has ended."""
        d: defer.Deferred = defer.Deferred()
        self._flushers.append(d)
        self._forced = True
        self._kick()
        return d

    # --- start and stop ---------------------------------------------------------------

    @defer.inlineCallbacks
    def close(self, drain: bool = True):
        """Stop taking values: commit the queued ones (``drain``) or fail them, then stop.

        A commit waiting out an outage is given up: its batch fails, and so
        do the queued values (none is acked, so the broker keeps them).
        """
        self._closing, self._drain = True, drain
        self._cancel_timer()
        if self._sleep is not None:
            self._sleep.cancel()
        if drain and self._pending and self._inflight < self.pipeline:
            self._kick()
        while self._inflight:
            d: defer.Deferred = defer.Deferred()
            self._idle.append(d)
            yield d
        self._fail_pending(Failure(RuntimeError(f"{self.name} stopping")))
        self.stop()

    def stop(self) -> None:
        """Stop at once (idempotent): no more batches, no retry, the thread stopped."""
        self._closing = True
        self._cancel_timer()
        if self._sleep is not None:
            self._sleep.cancel()
        if self._pool is not None and self._pool.started and not self._pool.joined:
            self._pool.stop()

    # --- batches ------------------------------------------------------------------------

    def _run_in_pool(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred:
        if self._pool is None:
            self._pool = ThreadPool(1, 1, name=self.name)
        if not self._pool.started:
            self._pool.start()
        return threads.deferToThreadPool(self.reactor, self._pool, fn, *args)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _ready(self) -> bool:
        """Whether a batch should start now rather than wait for batch_interval."""
        n = len(self._pending)
        if self._forced or (n and (self.batch_size is None or self._closing)):
            return True
        # The last clause: nothing more can arrive before something is acked.
        return n > 0 and (self._pending_size >= self.batch_size  # type: ignore[operator]
                          or (self.prefetch is not None
                              and n + self._unacked >= self.prefetch))

    def _kick(self) -> None:
        self._cancel_timer()
        if not self._pending and not self._forced:
            return
        if self._closing and not self._drain:
            return
        if self._inflight >= self.pipeline:
            self._sealed = self._sealed or self._ready()
            return
        self._sealed = self._forced = False
        batch = self._take()
        flushers, self._flushers = self._flushers, []
        self._inflight += 1
        d = defer.ensureDeferred(self._run_batch(batch, flushers))
        d.addErrback(lambda f: self.log.failure("{name} batch failed", f, name=self.name))
        d.addBoth(self._batch_finished)

    def _take(self) -> list[_Item]:
        """The next batch: at most batch_size (at least one value), or all when None."""
        pending = self._pending
        if self.batch_size is None:
            taken, self._pending, self._pending_size = pending, [], 0
            return taken
        size, n = 0, 0
        for item in pending:
            if n and size + item.size > self.batch_size:
                break
            size += item.size
            n += 1
        taken = pending[:n]
        del pending[:n]
        self._pending_size -= size
        return taken

    def _batch_finished(self, _result: object) -> None:
        self._inflight -= 1
        if not (self._closing and not self._drain):
            if self._sealed or self._ready():
                self._kick()
            elif self._pending:
                # batch_interval is the longest wait of a value, counted from its
                # arrival: what came in during the batch just ended may be due now.
                due = self._pending[0].arrived + self.batch_interval - self.reactor.seconds()
                if due <= 0:
                    self._kick()
                elif self._timer is None:
                    self._timer = self.reactor.callLater(due, self._kick)
        if not self._inflight:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    async def _run_batch(self, batch: list[_Item], flushers: list[defer.Deferred]) -> None:
        self._unacked += len(batch)
        try:
            await self._apply_commit_publish(batch)
        finally:
            self._unacked -= len(batch)
            for d in flushers:
                d.callback(None)

    async def _apply_commit_publish(self, batch: list[_Item]) -> None:
        applied = work = None
        try:
            applied = self.store.apply([it.value for it in batch])
            # The next batch may apply meanwhile: it snapshots once this commit ended.
            if self._inflight < self.pipeline and self._ready():
                self.reactor.callLater(0, self._kick)
            await self._commit_lock.acquire()
            try:
                work = self.store.snapshot(applied)
                result = None if work is None else await self._commit(work, len(batch))
            finally:
                self._commit_lock.release()
        except Exception:
            failure = Failure()
            self.store.failed(applied, work, failure)
            _fail(batch, failure)
            if self.fail_pending or self._closing:
                self._fail_pending(failure)
            return
        try:
            outcomes = await defer.maybeDeferred(self.store.committed, applied, result)
        except Exception:
            # Committed, so what it produced is kept (an outbox): the values go
            # back to the broker and come back as duplicates.
            failure = Failure()
            self.log.failure("{name}: batch committed, not published", failure, name=self.name)
            _fail(batch, failure)
            return
        if outcomes is None:
            for item in batch:
                item.deferred.callback(None)
            return
        for item, outcome in zip(batch, outcomes):
            if isinstance(outcome, BaseException):
                item.deferred.errback(Failure(outcome))
            else:
                item.deferred.callback(outcome)

    async def _commit(self, work: Any, size: int) -> Any:
        """Run the store's commit, retried with backoff while the database is away."""
        while True:
            try:
                result = await self._run(self.store.commit, work)
            except Exception as exc:
                self.last_error = self.describe(exc)
                if self.is_outage is None or not self.is_outage(exc):
                    raise
                if self._closing:
                    raise NotCommitted(f"not written: {self.last_error}") from exc
                self.retries += 1
                self.degraded = True
                delay = backoff_delay(self.retries, self.retry_initial, self.retry_max)
                self.store.outage(exc, self.retries, delay, size)
                self._sleep = task.deferLater(self.reactor, delay, lambda: None)
                try:
                    await self._sleep
                except defer.CancelledError:
                    raise NotCommitted(f"not written: {self.last_error}") from exc
                finally:
                    self._sleep = None
                continue
            if self.degraded:
                self.store.recovered(self.retries)
            self.degraded, self.last_error, self.retries = False, None, 0
            return result

    def _fail_pending(self, failure: Failure) -> None:
        items, self._pending, self._pending_size = self._pending, [], 0
        _fail(items, failure)


def _fail(items: list[_Item], failure: Failure) -> None:
    for item in items:
        item.deferred.errback(failure)
