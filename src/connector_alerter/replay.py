"""The alerter's start-up replay: stored samples fed to the evaluator, host by host.

At start-up the evaluator holds the state saved by the previous run. The
samples the SQL writer stored since each host's saved time are read back
through :mod:`centaure_shared.storage.query` (one query per host for every metric the
rules watch, globs expanded to the stored names they match) and fed to
:meth:`Evaluator.backfill`: hosts with a saved state get the transitions
that happened while the alerter was down; the others have their windows
rebuilt from the last hour (or the rules' lookback) without emitting.

:meth:`Replay.run` blocks (run it in a thread). It is resumable: when the
database goes away it raises the outage error and the next call goes on with
the host that failed, so a retry neither feeds a host twice nor skips one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import sqlalchemy as sa
from twisted.logger import Logger

from connector import messages
from connector_alerter.evaluator import Evaluator
from connector_alerter.state import ms
from centaure_shared.sql import is_outage

__all__ = ["Replay"]

#: Seconds replayed for hosts with no saved state (rules may ask for more).
DEFAULT_HORIZON = 3600.0
#: Most samples read back per host and watched metric.
LIMIT_PER_METRIC = 10_000
#: Seconds between two progress lines of a long replay.
PROGRESS_EVERY = 10.0


class Replay:
    """The stored samples since each host's saved time, fed to ``evaluator``; see the module."""

    log = Logger()

    def __init__(self, evaluator: Evaluator, engine: sa.Engine, table_prefix: str,
                 since: Mapping[str, float], now: float | None = None,
                 only: Callable[[str], bool] | None = None) -> None:
        from centaure_shared.storage.schema import make_schema

        self.evaluator = evaluator
        self.engine = engine
        self.schema = make_schema(table_prefix)
        self.since = dict(since)
        #: Replay only the hosts it accepts (the partitions owned here); None: all.
        self.only = only
        self.now = time.time() if now is None else now
        self.horizon = max([r.lookback or 0.0 for r in evaluator.rules] + [DEFAULT_HORIZON])
        #: host -> newest sample time (ms) fed or held by the saved state.
        self.replayed: dict[str, int] = {host: ms(ts) for host, ts in self.since.items()}
        #: Samples fed so far, and the transitions they caused (saved hosts only).
        self.samples = 0
        self.thresholds: list[messages.Threshold] = []
        self._hosts: list[str] | None = None
        self._types: dict[str, str] = {}
        self._metrics: set[str] = set()
        self._next = 0

    @property
    def hosts_done(self) -> int:
        """Hosts replayed (or skipped) so far."""
        return self._next

    def run(self, stopping: Callable[[], bool] = lambda: False) -> "Replay":
        """Replay the hosts not done yet (blocking); an outage error propagates (call again)."""
        from centaure_shared.storage.query import QueryError, samples

        if self._hosts is None:
            self._plan()
        hosts, metrics = self._hosts, self._metrics
        last_report = time.monotonic()
        while self._next < len(hosts) and not stopping():
            if time.monotonic() - last_report > PROGRESS_EVERY:
                last_report = time.monotonic()
                self.log.info("replaying stored samples: {done} of {total} hosts, "
                              "{n} samples so far", done=self._next, total=len(hosts),
                              n=self.samples)
            host = hosts[self._next]
            after = self.since.get(host)
            # A state older than the horizon is replayed from the horizon only.
            start = self.now - self.horizon if after is None else max(after, self.now - self.horizon)
            try:
                found = samples(self.engine, self.schema, host, metrics=metrics, start=start,
                                limit=LIMIT_PER_METRIC * len(metrics), order="asc")
            except QueryError:
                found = []  # gone meanwhile: nothing to rebuild
            except sa.exc.SQLAlchemyError as e:
                if is_outage(e):
                    raise
                self.log.warn("backfill stopped: {error}", error=str(e).splitlines()[0])
                self._next = len(hosts)
                break
            self._feed(host, after, found)
            self._next += 1
        return self

    def _plan(self) -> None:
        """The hosts stored, their device types, and the metric names the rules watch."""
        from centaure_shared.storage.query import QueryError, devices, metric_names

        leaves = [leaf for r in self.evaluator.rules for leaf in r.leaves() if leaf.metric]
        metrics = {leaf.metric for leaf in leaves if not leaf.is_glob}
        globs = [leaf for leaf in leaves if leaf.is_glob]
        try:
            stored = devices(self.engine, self.schema)
            if globs:
                # A glob rule watches the stored names it matches.
                metrics.update(name for name in metric_names(self.engine, self.schema)
                               if any(leaf.matches_metric(name) for leaf in globs))
        except (QueryError, sa.exc.SQLAlchemyError) as e:
            if is_outage(e):
                raise
            self.log.warn("backfill skipped: {error}", error=str(e).splitlines()[0])
            stored = []
        self._metrics = metrics
        self._hosts = [d.name for d in stored
                       if self.only is None or self.only(d.name)] if metrics else []
        self._types = {d.name: d.device_type for d in stored if d.device_type}

    def _feed(self, host: str, after: float | None, found: list) -> None:
        """One host's samples to the evaluator (a host's state is its own)."""
        after_ms = None if after is None else ms(after)
        rows = []
        newest = self.replayed.get(host, -1)
        for r in found:
            t = ms(r.ts)
            if after_ms is not None and t <= after_ms:
                continue  # in the saved state already
            rows.append((r.host, r.metric, r.index, r.ts, r.value))
            newest = max(newest, t)
        if newest >= 0:
            self.replayed[host] = newest
        self.samples += len(rows)
        self.thresholds += self.evaluator.backfill(rows, emit=after is not None,
                                                   device_types=self._types)
