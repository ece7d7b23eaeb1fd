"""Storm protection for the trap receiver: rate limits and duplicate suppression.

Both take a ``clock`` (a function returning seconds, e.g. ``reactor.seconds``)
so that tests drive time by hand, and both keep bounded memory: at most
``max_sources`` / ``max_entries`` entries, the least recently used evicted
first, and idle entries swept.

:class:`RateLimiter`
    A token bucket per source address: ``rate`` tokens per second, at most
    ``burst`` stored; each trap takes one token, and a trap finding no token
    is denied and counted. A source that was limited is reported once by
    :meth:`RateLimiter.summaries` as ``(source, dropped, since)`` when it
    calms down (no trap denied for ``quiet`` seconds) or, while the storm
    goes on, every ``summary_interval`` seconds: the service publishes one
    event per summary ("N traps dropped from X since T") instead of one per
    dropped trap.

:class:`Deduplicator`
    Drops a trap identical to one *published* less than ``window`` seconds
    before: same source, same origin (the host it is attributed to and the
    agent address it claims: a relay forwards the same trap of many devices),
    same trap OID, same key (the classification's key varbind values).
    Duplicates do not extend the window, so a condition a device keeps
    repeating is still published once per window.

:class:`ReportLimiter`
    Token buckets for the SNMPv3 Reports the receiver sends: one per
    destination address and one for all of them.  A Report (engine
    discovery, unknown user, wrong digest ...) answers a datagram that anyone
    can forge, and is bigger than it: unlimited, a receiver reflects and
    amplifies traffic towards a forged source.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import NamedTuple

__all__ = ["Deduplicator", "RateLimiter", "ReportLimiter", "StormSummary"]


# A token is taken when at least this much is left: refills computed from
# float clock readings (0.1 s + 0.25 s + ...) may fall short of a whole token
# by a rounding error, which must not deny a trap the rate allows.
_ONE = 1.0 - 1e-9


class StormSummary(NamedTuple):
    """Traps of one source dropped by the rate limit: ``dropped`` of them since ``since``."""

    source: str
    dropped: int
    since: float


class _Bucket:
    __slots__ = ("tokens", "stamp", "dropped", "since", "last_drop")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp          # when tokens was last brought up to date
        self.dropped = 0            # denied since the last summary
        self.since = 0.0            # first denial since the last summary
        self.last_drop = 0.0        # latest denial


class RateLimiter:
    """Token bucket per source: ``allow(source)`` is True for a trap to handle, False to drop.

    ``rate`` 0 turns the limit off (everything allowed, nothing stored).
    Counters: ``allowed``, ``denied`` (totals), ``evicted`` (sources
    forgotten to stay within ``max_sources``) and ``lost`` (denials of
    evicted sources that no summary will report).
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float], *,
                 summary_interval: float = 60.0, quiet: float = 10.0,
                 max_sources: int = 100_000) -> None:
        if rate < 0:
            raise ValueError(f"rate must be 0 (off) or positive, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        if max_sources < 1:
            raise ValueError(f"max_sources must be at least 1, got {max_sources!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self.summary_interval = summary_interval
        self.quiet = quiet
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        # Seconds for an empty bucket to fill up again: a full bucket that
        # has no pending summary is the same as no bucket at all.
        self._refill = self.burst / self.rate if self.rate else 0.0
        self.allowed = 0
        self.denied = 0
        self.evicted = 0
        self.lost = 0

    @property
    def enabled(self) -> bool:
        """False when ``rate`` is 0."""
        return self.rate > 0

    def allow(self, source: str) -> bool:
        """Take a token from ``source``'s bucket; False (and counted) when it is empty."""
        if not self.rate:
            self.allowed += 1
            return True
        now = self.clock()
        buckets = self._buckets
        bucket = buckets.get(source)
        if bucket is None:
            bucket = buckets[source] = _Bucket(self.burst, now)
            if len(buckets) > self.max_sources:
                self._evict_one()
        else:
            buckets.move_to_end(source)
            elapsed = now - bucket.stamp
            if elapsed > 0:
                tokens = bucket.tokens + elapsed * self.rate
                bucket.tokens = tokens if tokens < self.burst else self.burst
                bucket.stamp = now
        if bucket.tokens > _ONE:
            bucket.tokens -= 1.0
            self.allowed += 1
            return True
        if not bucket.dropped:
            bucket.since = now
        bucket.dropped += 1
        bucket.last_drop = now
        self.denied += 1
        return False

    def _evict_one(self) -> None:
        _, bucket = self._buckets.popitem(last=False)
        self.evicted += 1
        self.lost += bucket.dropped

    def dropped(self, source: str) -> int:
        """Traps of ``source`` denied and not yet reported by :meth:`summaries`."""
        bucket = self._buckets.get(source)
        return 0 if bucket is None else bucket.dropped

    def summaries(self, now: float | None = None) -> list[StormSummary]:
        """Report (and reset) the sources due a summary; forget idle sources.

        A source is due when it has denied traps and either none for
        ``quiet`` seconds (the storm is over) or its first unreported denial
        is ``summary_interval`` seconds old (the storm goes on). Call it
        periodically (every few seconds): it is also what sweeps idle
        sources out of memory.
        """
        if now is None:
            now = self.clock()
        out: list[StormSummary] = []
        idle: list[str] = []
        for source, bucket in self._buckets.items():
            if bucket.dropped:
                if now - bucket.last_drop >= self.quiet or now - bucket.since >= self.summary_interval:
                    out.append(StormSummary(source, bucket.dropped, bucket.since))
                    bucket.dropped = 0
            if not bucket.dropped and now - bucket.stamp >= self._refill:
                idle.append(source)
        for source in idle:
            del self._buckets[source]
        return out

    def __len__(self) -> int:
        """Sources currently tracked."""
        return len(self._buckets)


class Deduplicator:
    """Remembers what was published for ``window`` seconds; ``is_duplicate`` drops repeats.

    ``window`` 0 turns it off (nothing is a duplicate, nothing stored).
    Counters: ``duplicates`` and ``evicted`` (entries forgotten early to
    stay within ``max_entries``, which can only let a duplicate through).
    """

    def __init__(self, window: float, clock: Callable[[], float], *, max_entries: int = 100_000) -> None:
        if window < 0:
            raise ValueError(f"window must be 0 (off) or positive, got {window!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries!r}")
        self.window = float(window)
        self.clock = clock
        self.max_entries = max_entries
        # identity -> time published, oldest first (re-published ones move to the end).
        self._seen: OrderedDict[tuple[Hashable, ...], float] = OrderedDict()
        self.duplicates = 0
        self.evicted = 0

    @property
    def enabled(self) -> bool:
        """False when ``window`` is 0."""
        return self.window > 0

    def is_duplicate(self, source: str, trap_oid: str, key: Hashable = "",
                     origin: Hashable = "") -> bool:
        """True (and counted) when the same trap was published less than ``window`` s ago.

        ``origin`` tells apart the devices one source speaks for (the host the
        trap is attributed to, the agent address it claims).  Otherwise the
        trap is remembered as published now and False returned.
        """
        if not self.window:
            return False
        now = self.clock()
        seen = self._seen
        self._expire(now)
        identity = (source, origin, trap_oid, key)
        published = seen.get(identity)
        if published is not None and now - published < self.window:
            self.duplicates += 1
            return True
        seen[identity] = now
        seen.move_to_end(identity)
        if len(seen) > self.max_entries:
            seen.popitem(last=False)
            self.evicted += 1
        return False

    def _expire(self, now: float) -> None:
        seen = self._seen
        window = self.window
        while seen:
            identity, published = next(iter(seen.items()))
            if now - published < window:
                break
            del seen[identity]

    def expire(self, now: float | None = None) -> None:
        """Forget entries older than the window (also done by every :meth:`is_duplicate`)."""
        self._expire(self.clock() if now is None else now)

    def __len__(self) -> int:
        """Entries currently remembered."""
        return len(self._seen)


class ReportLimiter:
    """``allow(destination)``: whether one more SNMPv3 Report may be sent there.

    ``per_source`` Reports per second to one address and ``total`` in all,
    each a token bucket holding one second's worth (at least one token); 0
    allows none.  A denial names its bucket in :attr:`last_denial`
    (``"source"`` or ``"global"``); ``sent`` and ``suppressed`` count.  At
    most ``max_sources`` destinations are remembered (the least recently used
    forgotten first: a forgotten one starts again with a full bucket, which
    the total bucket still bounds).
    """

    def __init__(self, per_source: float, total: float, clock: Callable[[], float], *,
                 max_sources: int = 10_000) -> None:
        for name, rate in (("per_source", per_source), ("total", total)):
            if rate < 0:
                raise ValueError(f"{name} must be 0 (no Reports) or positive, got {rate!r}")
        self.per_source = float(per_source)
        self.total = float(total)
        self._sources = RateLimiter(per_source or 1, max(1, int(per_source)), clock,
                                    max_sources=max_sources)
        self._all = RateLimiter(total or 1, max(1, int(total)), clock, max_sources=1)
        self.last_denial = ""
        self.sent = 0
        self.suppressed = 0

    def allow(self, destination: str) -> bool:
        """Take a token from ``destination``'s bucket, then from the total one."""
        if not self.per_source or not self._sources.allow(destination):
            return self._deny("source")
        if not self.total or not self._all.allow(""):
            return self._deny("global")
        self.sent += 1
        return True

    def _deny(self, bucket: str) -> bool:
        self.last_denial = bucket
        self.suppressed += 1
        return False
