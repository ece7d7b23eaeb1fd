"""The rule evaluator's state in SQL, so that it survives restarts and kill -9.

What is kept: one row per host in ``<prefix>eval_state``
(:mod:`connector_alerter.schema`): the host's state as
:meth:`~connector_alerter.evaluator.Evaluator.export_host` gives it (windows,
leaf truth, breach status, ``for`` timers, deadman last-seen times) as JSON,
and ``ts``, the newest sample time that state includes. A host's whole state
is one row so that hosts can later be sharded between alerters (and moved).

When it is written (:class:`StateSaver`): every second, off the reactor
thread, in order, for the hosts whose state changed; soon after a
``threshold`` is published; and once more on a clean stop. A host whose
values left its state exactly as it was is not rewritten: its saved row
(state S at time t0) stays a valid checkpoint, since replaying the values
after t0 from S gives S again and no transition (the evaluator is a pure
function of state and values).

Start-up (:mod:`connector_alerter.service`): the saved states are imported,
then the samples the writer stored *after* each host's ``ts`` are replayed
with ``emit=True``, and the transitions found are published before the
alerter subscribes. So:

* a recovery (or a breach) that happened while the alerter was down is
  published, relative to the persisted breach status;
* a breach already published is persisted as breached and not published again;
* ``perf`` messages still queued for the alerter whose time is not after what
  was replayed are skipped (the samples already went through the evaluator).

The one overlap: a kill -9 after a ``threshold`` was published but before the
state recording it was saved (within about a second). The restart replays the
same samples from the older state and finds the same transition again. It is
published with the same message id (:func:`threshold_message_id`: host,
rule, state, sample time in milliseconds, the values' metrics and indexes),
and the correlator drops a message id it already applied (its per-host seen
window, persisted with its alarms): the repeat changes nothing downstream.
Even past that window a repeated ``breached`` only updates the active alarm
(count + 1) and a repeated ``recovered`` finds nothing to clear. The message
id is computed from the sample time, not the wall clock, so the live path
evaluates with data time (``evaluate(perf)``) as the replay does.

Hosts with no saved row (first start with this revision, or a host first seen
less than a second before a crash) are rebuilt as before, without emitting:
their breaches were published by the process that saw them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec
import sqlalchemy as sa
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from connector.batching import BatchCommitter
from connector.interfaces import IBatchStore
from connector.messages import Threshold

from .schema import AlerterSchema, make_schema

_encode = msgspec.json.Encoder().encode

__all__ = ["EvalStateStore", "StateSaver", "ms", "threshold_message_id"]

#: Hosts written per statement (MariaDB's packet and SQLite's variable limits).
_CHUNK = 500


def ms(ts: float) -> int:
    """UNIX seconds as the writer stores them: whole milliseconds, rounded."""
    return int(round(ts * 1000.0))


def threshold_message_id(threshold: Threshold, occurrence: int = 0) -> str:
    """A message id that a replay of the same samples gives again (32 hex digits).

    From the host, rule, state, the time in milliseconds (the sample's, as
    stored by the writer) and the metrics and indexes of the values (not the
    values: a stored 95 comes back as 95.0). ``occurrence`` tells apart
    messages that share all of these in one batch (e.g. a schedule ending
    recovers several indexes with no values).
    """
    pairs = sorted({(v.metric, v.index) for v in threshold.values})
    key = _encode([threshold.host, threshold.rule, threshold.state, ms(threshold.ts),
                   pairs, occurrence])
    return hashlib.blake2b(key, digest_size=16).hexdigest()


class EvalStateStore:
    """Blocking reads and writes of ``<prefix>eval_state`` (call from a thread)."""

    def __init__(self, engine: sa.Engine, prefix: str = "alert_") -> None:
        self.engine = engine
        self.schema: AlerterSchema = make_schema(prefix)

    def load(self, hosts: Iterable[str] | None = None) -> dict[str, tuple[dict[str, Any], float | None]]:
        """Saved states: ``{host: (state, ts)}`` (every host, or those of ``hosts``)."""
        t = self.schema.eval_state
        q = sa.select(t.c.host, t.c.state, t.c.ts)
        out: dict[str, tuple[dict[str, Any], float | None]] = {}
        with self.engine.connect() as conn:
            if hosts is None:
                rows = list(conn.execute(q))
            else:
                wanted = list(hosts)
                rows = []
                for i in range(0, len(wanted), _CHUNK):
                    rows.extend(conn.execute(q.where(t.c.host.in_(wanted[i:i + _CHUNK]))))
        for host, text, ts in rows:
            out[host] = (json.loads(text), ts)
        return out

    def save(self, rows: Mapping[str, tuple[str, float | None]], now: float) -> None:
        """Write ``{host: (state JSON text, ts)}`` in one transaction, replacing those hosts' rows."""
        t = self.schema.eval_state
        hosts = list(rows)
        with self.engine.begin() as conn:
            for i in range(0, len(hosts), _CHUNK):
                chunk = hosts[i:i + _CHUNK]
                # Delete then insert: portable (no dialect upsert), and one row per host.
                conn.execute(t.delete().where(t.c.host.in_(chunk)))
                conn.execute(t.insert(), [{"host": h, "state": rows[h][0], "ts": rows[h][1],
                                           "updated": now} for h in chunk])

    def delete(self, hosts: Iterable[str]) -> None:
        """Forget these hosts' state (a host moved away, tests)."""
        t = self.schema.eval_state
        hosts = list(hosts)
        with self.engine.begin() as conn:
            for i in range(0, len(hosts), _CHUNK):
                conn.execute(t.delete().where(t.c.host.in_(hosts[i:i + _CHUNK])))


@implementer(IBatchStore)
class StateSaver:
    """Saves the evaluator's changed hosts every ``interval`` seconds, off the reactor thread.

    ``take`` is :meth:`Evaluator.take_changes`. Saves run one at a time, in
    order; a host changed again while a save runs goes in the next one. A
    failed save is logged (one line) and its rows are kept for the next
    attempt (newer states of a host replace older ones); the daemon goes on.
    """

    log = Logger()

    def __init__(self, reactor, store: EvalStateStore,
                 take: Callable[[], Mapping[str, tuple[dict, float | None, bool]]],
                 interval: float = 1.0, soon_delay: float = 0.05) -> None:
        self.reactor = reactor
        self.store = store
        self.take = take
        self.interval = interval
        self.soon_delay = soon_delay
        #: host -> (JSON text without ts, ts) as last saved (or loaded).
        self.saved: dict[str, tuple[str, float | None]] = {}
        #: host -> (text, ts) taken and not yet saved.
        self.waiting: dict[str, tuple[str, float | None]] = {}
        self.saves = 0
        self.errors = 0
        self.last_error: str | None = None
        self._loop: task.LoopingCall | None = None
        self._soon = None
        # Input-less batches (flush), one at a time; a failed save waits for the next flush.
        self._batches = BatchCommitter(reactor, self, name="alerter-state",
                                       run=threads.deferToThread)

    def remember(self, saved: Mapping[str, tuple[dict, float | None]]) -> None:
        """What is in the table already (from :meth:`EvalStateStore.load`)."""
        for host, (state, ts) in saved.items():
            self.saved[host] = (_text(state), ts)

    def forget(self, hosts: Iterable[str]) -> None:
        """Drop what is known or waiting of ``hosts`` (their partition is owned elsewhere now)."""
        for host in hosts:
            self.saved.pop(host, None)
            self.waiting.pop(host, None)

    def start(self) -> None:
        """Save every ``interval`` seconds."""
        self._loop = task.LoopingCall(self.flush)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=False)

    def soon(self) -> None:
        """Save shortly (a ``threshold`` was published): batched with what follows at once."""
        if self._soon is None or not self._soon.active():
            self._soon = self.reactor.callLater(self.soon_delay, self.flush)

    def collect(self) -> int:
        """Take the evaluator's changes; queue the hosts whose state differs from the saved one."""
        n = 0
        for host, (state, ts, transitions) in self.take().items():
            text = _text(state)
            known = self.waiting.get(host) or self.saved.get(host)
            # Same state: the saved row is still a valid checkpoint (see the module
            # docstring), unless a transition happened in between (then its time moved
            # past a published threshold and must be written).
            if known is not None and known[0] == text and not transitions:
                continue
            self.waiting[host] = (text, ts)
            n += 1
        return n

    def flush(self) -> defer.Deferred:
        """Collect and save; fires when this save (and any running) is done. Never fails."""
        self.collect()
        return self._batches.flush()

    # --- IBatchStore (the saves) ------------------------------------------------

    def apply(self, values: list) -> None:
        """Nothing is queued: a save takes what :meth:`collect` gathered."""

    def snapshot(self, applied: None) -> tuple | None:
        """The hosts waiting to be saved (None: none)."""
        if not self.waiting:
            return None
        rows, self.waiting = self.waiting, {}
        return rows, time.time()

    def commit(self, work: tuple) -> dict[str, tuple[str, float | None]]:
        """Write the rows (thread); the rows."""
        rows, now = work
        self.store.save(rows, now)
        return rows

    def committed(self, applied: None, rows: dict[str, tuple[str, float | None]] | None) -> None:
        """Saved (``rows`` None: nothing was waiting): these rows are the checkpoint now."""
        if rows is not None:
            self.saves += 1
            self.saved.update(rows)

    def failed(self, applied: None, work: tuple | None, failure: Failure) -> None:
        """A database error must not stop the alerter: the rows wait for the next save."""
        if work is None:
            return
        rows, _ = work
        e = failure.value
        self.errors += 1
        self.last_error = str(e).splitlines()[0] if str(e) else type(e).__name__
        self.log.warn("alerter state not saved ({n} hosts), retrying: {error}",
                      n=len(rows), error=self.last_error)
        # Keep them, unless a newer state of the host was taken meanwhile.
        for host, row in rows.items():
            self.waiting.setdefault(host, row)

    def outage(self, error: BaseException, attempt: int, delay: float, size: int) -> None:
        """Not retried in place (no ``is_outage``): the next flush saves again."""

    def recovered(self, attempts: int) -> None:
        """Not retried in place: nothing to tell."""

    @defer.inlineCallbacks
    def stop(self):
        """Stop the timer and save what changed (a clean stop loses nothing)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        yield self.flush()

    def health(self) -> dict:
        """Saves done, failures, hosts waiting to be saved."""
        body: dict[str, Any] = {"saves": self.saves, "errors": self.errors,
                                "waiting": len(self.waiting)}
        if self.waiting and self.last_error:
            body["last_error"] = self.last_error
        return body


def _text(state: Mapping[str, Any]) -> str:
    return json.dumps(state, separators=(",", ":"), allow_nan=True)
