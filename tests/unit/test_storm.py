"""Storm protection: token buckets (traps, Reports), storm summaries, the deduplicator; fake clock."""

from __future__ import annotations

import pytest

from connector_traps.storm import Deduplicator, RateLimiter, ReportLimiter, StormSummary


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def allowed(limiter: RateLimiter, source: str, n: int) -> int:
    return sum(limiter.allow(source) for _ in range(n))


# --------------------------------------------------------------------------
# Token bucket


def test_burst_then_rate_exact_counts() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=5, clock=clock)
    assert allowed(limiter, "10.0.0.1", 8) == 5           # the burst, no more
    assert limiter.dropped("10.0.0.1") == 3
    clock.now += 0.1                                       # one token back
    assert allowed(limiter, "10.0.0.1", 3) == 1
    clock.now += 0.25                                      # 2.5 tokens: two whole ones
    assert allowed(limiter, "10.0.0.1", 3) == 2
    clock.now += 0.05                                      # the half token becomes whole
    assert allowed(limiter, "10.0.0.1", 1) == 1
    clock.now += 60                                        # refills to the burst, not beyond
    assert allowed(limiter, "10.0.0.1", 10) == 5
    assert (limiter.allowed, limiter.denied) == (14, 3 + 2 + 1 + 5)


def test_sustained_rate_over_ten_seconds() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=200, burst=1000, clock=clock)
    passed = 0
    for _ in range(10_000):                                # 1000 traps/s for 10 s
        passed += limiter.allow("198.51.100.9")
        clock.now += 0.001
    # The burst, then 200/s for the 9.999 s that followed the first trap.
    assert passed == 1000 + 1999


def test_sources_are_independent() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=2, clock=clock)
    assert allowed(limiter, "a", 5) == 2
    assert allowed(limiter, "b", 5) == 2
    assert (limiter.dropped("a"), limiter.dropped("b"), limiter.dropped("c")) == (3, 3, 0)


def test_rate_zero_is_off() -> None:
    limiter = RateLimiter(rate=0, burst=1, clock=Clock())
    assert allowed(limiter, "a", 100_000) == 100_000
    assert len(limiter) == 0 and limiter.summaries() == [] and not limiter.enabled


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        RateLimiter(-1, 10, Clock())
    with pytest.raises(ValueError):
        RateLimiter(1, 0, Clock())
    with pytest.raises(ValueError):
        Deduplicator(-1, Clock())


# --------------------------------------------------------------------------
# Summaries


def test_summary_when_the_source_calms_down() -> None:
    clock = Clock(5000.0)
    limiter = RateLimiter(rate=1, burst=3, clock=clock, quiet=10, summary_interval=60)
    allowed(limiter, "10.1.1.1", 10)                        # 7 dropped at t=5000
    clock.now = 5002.0
    allowed(limiter, "10.1.1.1", 4)                        # 2 tokens back, 2 more dropped
    assert limiter.summaries(5011.9) == []                 # still within the quiet time
    assert limiter.summaries(5012.0) == [StormSummary("10.1.1.1", 9, 5000.0)]
    assert limiter.summaries(5013.0) == []                 # reported once
    assert limiter.dropped("10.1.1.1") == 0


def test_summary_every_interval_while_the_storm_goes_on() -> None:
    clock = Clock(0.0)
    limiter = RateLimiter(rate=10, burst=10, clock=clock, quiet=5, summary_interval=30)
    reports = []
    for step in range(1, 901):                             # 100 s at 100 traps/s, polled every 10 s
        clock.now = step / 10
        allowed(limiter, "storm", 10)
        if step % 100 == 0:
            reports.extend(limiter.summaries(clock.now))
    # The burst passes at 0.1 s, the first denial is at 0.2 s; a summary is due 30 s
    # after the first denial it reports, and goes out at the next poll (40 s, 80 s).
    assert [(s.source, round(s.since, 1)) for s in reports] == [("storm", 0.2), ("storm", 40.1)]
    # Summaries add up to every denial so far minus the pending ones.
    assert sum(s.dropped for s in reports) + limiter.dropped("storm") == limiter.denied
    clock.now = 200.0
    last = limiter.summaries(clock.now)
    assert len(last) == 1 and sum(s.dropped for s in reports + last) == limiter.denied


def test_summary_content_with_default_clock() -> None:
    clock = Clock(100.0)
    limiter = RateLimiter(rate=1, burst=1, clock=clock, quiet=1)
    allowed(limiter, "2001:db8::1", 4)
    clock.now = 102.0
    summary, = limiter.summaries()                         # now taken from the clock
    assert summary == ("2001:db8::1", 3, 100.0)
    assert (summary.source, summary.dropped, summary.since) == ("2001:db8::1", 3, 100.0)


# --------------------------------------------------------------------------
# Memory bound of the limiter


def test_idle_sources_are_swept() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=100, burst=10, clock=clock, quiet=1)
    for i in range(1000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}")
    allowed(limiter, "noisy", 50)
    assert len(limiter) == 1001
    clock.now += 0.05                                      # not yet refilled: kept
    assert limiter.summaries() == [] and len(limiter) == 1001
    clock.now += 1.0                                       # full buckets are forgotten...
    assert limiter.summaries() == [StormSummary("noisy", 40, 1000.0)]
    assert len(limiter) == 0                               # ...once their drops are reported
    assert allowed(limiter, "noisy", 10) == 10              # and a returning source starts full


def test_max_sources_evicts_the_least_recent() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=1, clock=clock, max_sources=100)
    allowed(limiter, "first", 3)                           # 2 pending drops
    for i in range(150):
        limiter.allow(f"spoofed-{i}")
    assert len(limiter) == 100
    assert limiter.evicted == 51 and limiter.lost == 2
    assert limiter.dropped("first") == 0


def test_recently_seen_source_survives_eviction() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=1, clock=clock, max_sources=3)
    limiter.allow("keep")
    limiter.allow("x1")
    limiter.allow("keep")                                  # most recent again
    limiter.allow("x2")
    limiter.allow("x3")                                    # evicts x1, the least recent
    assert limiter.dropped("keep") == 1 and len(limiter) == 3
    assert limiter.allow("keep") is False                  # its bucket was kept (still empty)


# --------------------------------------------------------------------------
# Deduplicator


def test_dedup_window_edges() -> None:
    clock = Clock(0.0)
    dedup = Deduplicator(10, clock)
    assert dedup.is_duplicate("10.0.0.1", "1.3.6.1.6.3.1.1.5.3", "3") is False
    clock.now = 9.999
    assert dedup.is_duplicate("10.0.0.1", "1.3.6.1.6.3.1.1.5.3", "3") is True
    clock.now = 10.0                                       # exactly the window: published again
    assert dedup.is_duplicate("10.0.0.1", "1.3.6.1.6.3.1.1.5.3", "3") is False
    clock.now = 19.5
    assert dedup.is_duplicate("10.0.0.1", "1.3.6.1.6.3.1.1.5.3", "3") is True
    assert dedup.duplicates == 2


def test_duplicates_do_not_extend_the_window() -> None:
    clock = Clock(0.0)
    dedup = Deduplicator(10, clock)
    published = []
    for second in range(35):                               # the same trap every second
        clock.now = float(second)
        if not dedup.is_duplicate("ups1", "1.3.6.1.2.1.33.2.1", ""):
            published.append(second)
    assert published == [0, 10, 20, 30]
    assert dedup.duplicates == 31


def test_dedup_identity_is_source_oid_and_key() -> None:
    dedup = Deduplicator(60, Clock())
    assert not dedup.is_duplicate("a", "1.2.3", "1")
    assert not dedup.is_duplicate("b", "1.2.3", "1")       # another source
    assert not dedup.is_duplicate("a", "1.2.4", "1")       # another trap
    assert not dedup.is_duplicate("a", "1.2.3", "2")       # another key (another interface)
    assert not dedup.is_duplicate("a", "1.2.3", "")
    assert dedup.is_duplicate("a", "1.2.3", "1") and dedup.is_duplicate("a", "1.2.3", "")
    assert len(dedup) == 5


def test_dedup_zero_window_is_off() -> None:
    dedup = Deduplicator(0, Clock())
    assert not any(dedup.is_duplicate("a", "1.2.3", "k") for _ in range(100))
    assert len(dedup) == 0 and not dedup.enabled


def test_dedup_memory_is_bounded() -> None:
    clock = Clock(0.0)
    dedup = Deduplicator(10, clock, max_entries=1000)
    for i in range(5000):
        dedup.is_duplicate("10.0.0.1", "1.2.3", str(i))
    assert len(dedup) == 1000 and dedup.evicted == 4000
    assert dedup.is_duplicate("10.0.0.1", "1.2.3", "4999")    # the newest are kept
    assert not dedup.is_duplicate("10.0.0.1", "1.2.3", "0")   # the oldest went first
    # Expired entries go as time passes, without any new trap being a duplicate.
    clock.now = 10.0
    dedup.expire()
    assert len(dedup) == 0
    clock.now = 11.0
    dedup.is_duplicate("x", "1.2.3", "")
    assert len(dedup) == 1


def test_dedup_identity_includes_the_origin() -> None:
    # One relay (the source) forwarding the same linkDown of two devices.
    dedup = Deduplicator(60, Clock())
    assert not dedup.is_duplicate("192.0.2.7", "1.2.3", "1", origin=("router01", None))
    assert not dedup.is_duplicate("192.0.2.7", "1.2.3", "1", origin=("router02", None))
    assert dedup.is_duplicate("192.0.2.7", "1.2.3", "1", origin=("router01", None))


# --------------------------------------------------------------------------
# Reports


def test_reports_per_destination_burst_then_rate() -> None:
    clock = Clock()
    reports = ReportLimiter(per_source=10, total=200, clock=clock)
    assert sum(reports.allow("192.0.2.1") for _ in range(50)) == 10   # one second's worth
    assert reports.last_denial == "source" and reports.suppressed == 40
    assert reports.allow("192.0.2.2")                                 # another address: its own
    clock.now += 0.1
    assert sum(reports.allow("192.0.2.1") for _ in range(5)) == 1     # 10/s refill
    assert reports.sent == 12


def test_reports_total_bounds_many_forged_sources() -> None:
    clock = Clock()
    reports = ReportLimiter(per_source=10, total=200, clock=clock)
    sent = sum(reports.allow(f"10.0.{i // 256}.{i % 256}") for i in range(1000))
    assert sent == 200 and reports.last_denial == "global"
    clock.now += 1.0
    assert sum(reports.allow(f"10.9.{i // 256}.{i % 256}") for i in range(1000)) == 200


def test_reports_zero_means_none_and_small_rates_keep_one_token() -> None:
    clock = Clock()
    assert not ReportLimiter(0, 200, clock).allow("a")
    assert not ReportLimiter(10, 0, clock).allow("a")
    slow = ReportLimiter(0.5, 200, clock)
    assert [slow.allow("a") for _ in range(3)] == [True, False, False]
    clock.now += 2.0
    assert slow.allow("a")
    with pytest.raises(ValueError, match="per_source"):
        ReportLimiter(-1, 200, clock)


def test_reports_memory_is_bounded() -> None:
    reports = ReportLimiter(10, 1_000_000, Clock(), max_sources=100)
    for i in range(1000):
        reports.allow(f"h{i}")
    assert len(reports._sources) == 100
