"""Tests of connector_snmp.scheduler on a fake clock: pace, spread, overlap, bound, backoff."""

from __future__ import annotations

from typing import Callable

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from connector.metrics import Counters
from connector_snmp.scheduler import Scheduler, spread_offset


class Agents:
    """A fake ``poll``: records when each host is polled; each poll waits until answered."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.starts: list[tuple[float, str]] = []
        self.pending: dict[str, defer.Deferred[bool]] = {}
        self.most_running = 0
        self.answer: Callable[[str], bool | None] = lambda name: None

    def poll(self, name: str) -> defer.Deferred[bool]:
        assert name not in self.pending, f"{name} polled while its poll is still running"
        self.starts.append((self.clock.seconds(), name))
        result = self.answer(name)
        if result is not None:
            return defer.succeed(result)
        d: defer.Deferred[bool] = defer.Deferred()
        self.pending[name] = d
        self.most_running = max(self.most_running, len(self.pending))
        return d

    def finish(self, name: str, ok: bool = True) -> None:
        self.pending.pop(name).callback(ok)

    def times(self, name: str) -> list[float]:
        return [t for t, n in self.starts if n == name]


def make(max_concurrent: int = 200, max_backoff: int = 8) -> tuple[Clock, Agents, Counters, Scheduler]:
    clock = Clock()
    agents = Agents(clock)
    counters = Counters("centaure-snmp")
    return clock, agents, counters, Scheduler(clock, agents.poll, counters,
                                              max_concurrent=max_concurrent, max_backoff=max_backoff)


def advance_to(clock: Clock, t: float) -> None:
    """Advance to ``t`` stopping at every planned call, so each runs at its exact time."""
    while clock.seconds() < t:
        planned = [c.getTime() for c in clock.getDelayedCalls() if c.getTime() > clock.seconds()]
        clock.advance(min([t, *planned]) - clock.seconds())


def test_spread_offset_is_stable_and_within_the_interval() -> None:
    offsets = [spread_offset(f"dev-{i}", 60.0) for i in range(500)]
    assert offsets == [spread_offset(f"dev-{i}", 60.0) for i in range(500)]
    assert all(0.0 <= o < 60.0 for o in offsets)
    assert len(set(offsets)) == 500


def test_first_polls_spread_over_the_interval() -> None:
    clock, agents, counters, sched = make()
    sched.set_devices({f"dev-{i}": 60.0 for i in range(200)})
    agents.answer = lambda name: True
    assert counters.values["devices_scheduled"] == 200
    assert agents.starts == []  # nothing at time 0: every start waits for its offset
    advance_to(clock, 60.0)
    # Every device polled once in the first interval, each at its own offset...
    assert sorted(n for _, n in agents.starts) == sorted(f"dev-{i}" for i in range(200))
    for t, name in agents.starts:
        assert t == pytest.approx(spread_offset(name, 60.0))
    # ...and the starts cover the interval: every 10-second slice has some.
    per_slice = [sum(1 for t, _ in agents.starts if k * 10 <= t < (k + 1) * 10) for k in range(6)]
    assert min(per_slice) >= 15 and max(per_slice) <= 60, per_slice


def test_each_device_polled_at_its_own_interval() -> None:
    clock, agents, _, sched = make()
    agents.answer = lambda name: True
    sched.set_devices({"fast": 10.0, "slow": 30.0})
    advance_to(clock, 95.0)
    fast, slow = agents.times("fast"), agents.times("slow")
    assert [b - a for a, b in zip(fast, fast[1:])] == pytest.approx([10.0] * (len(fast) - 1))
    assert [b - a for a, b in zip(slow, slow[1:])] == pytest.approx([30.0] * (len(slow) - 1))
    assert len(fast) == 9 or len(fast) == 10
    assert len(slow) == 3 or len(slow) == 4


def test_running_poll_is_not_started_again_and_overrun_counted() -> None:
    clock, agents, counters, sched = make()
    sched.set_devices({"slowpoke": 10.0})
    first = spread_offset("slowpoke", 10.0)
    advance_to(clock, first + 0.1)
    assert agents.times("slowpoke") == [pytest.approx(first)]
    # The poll hangs for three intervals: three ticks are skipped and counted.
    advance_to(clock, first + 30.5)
    assert len(agents.times("slowpoke")) == 1
    assert counters.values["overruns"] == 3
    agents.finish("slowpoke")
    # The next tick after the poll ends polls again, on the original pace.
    advance_to(clock, first + 40.5)
    assert agents.times("slowpoke") == [pytest.approx(first), pytest.approx(first + 40.0)]
    assert counters.values["overruns"] == 3


def test_concurrency_bound() -> None:
    clock, agents, _, sched = make(max_concurrent=3)
    names = [f"dev-{i}" for i in range(10)]
    sched.set_devices(dict.fromkeys(names, 60.0))
    advance_to(clock, 60.0)
    # Ten ticks happened, only three polls run; the others wait their turn.
    assert len(agents.pending) == 3 and len(agents.starts) == 3
    waiting = 7
    while agents.pending:
        before = len(agents.pending)
        agents.finish(next(iter(agents.pending)))
        # Each end lets exactly one waiting poll start, never more.
        started = 1 if waiting else 0
        waiting -= started
        assert len(agents.pending) == before - 1 + started
    assert agents.most_running == 3
    assert sorted(n for _, n in agents.starts) == sorted(names)


def test_unreachable_device_backs_off_then_recovers() -> None:
    clock, agents, counters, sched = make(max_backoff=8)
    reachable = False
    agents.answer = lambda name: reachable
    sched.set_devices({"down": 10.0})
    first = spread_offset("down", 10.0)
    advance_to(clock, first + 300.0)
    times = agents.times("down")
    gaps = [round(b - a, 6) for a, b in zip(times, times[1:])]
    # Doubling from the interval, capped at interval * max_backoff.
    assert gaps[:7] == [10.0, 10.0, 20.0, 40.0, 80.0, 80.0, 80.0][:len(gaps[:7])]
    assert len(gaps) >= 5 and max(gaps) == 80.0
    reachable = True
    last = times[-1]
    advance_to(clock, last + 80.0 + 35.0)
    later = [t for t in agents.times("down") if t > last]
    # The retry already planned comes after the backed-off delay; once it
    # answers, the device is back to its interval.
    assert [round(t - last, 6) for t in later] == [80.0, 90.0, 100.0, 110.0]
    assert counters.values.get("overruns", 0) == 0


def test_poll_raising_counts_as_failure() -> None:
    clock, agents, _, sched = make()

    def boom(name: str) -> bool:
        raise RuntimeError("agent on fire")

    agents.answer = boom
    sched.set_devices({"x": 10.0})
    advance_to(clock, 60.0)
    assert sched.schedules["x"].failures >= 3
    times = agents.times("x")
    assert times[3] - times[2] > times[1] - times[0]


def test_removed_device_is_not_polled_again() -> None:
    clock, agents, counters, sched = make()
    sched.set_devices({"a": 10.0, "b": 10.0})
    advance_to(clock, 10.0)
    assert set(agents.pending) == {"a", "b"}
    sched.set_devices({"b": 10.0})
    assert counters.values["devices_scheduled"] == 1
    agents.answer = lambda name: True
    agents.finish("a")  # the in-flight poll ends normally, is not rescheduled
    agents.finish("b")
    advance_to(clock, 50.0)
    assert len(agents.times("a")) == 1
    assert len(agents.times("b")) >= 4


def test_interval_change_takes_effect() -> None:
    clock, agents, _, sched = make()
    agents.answer = lambda name: True
    sched.set_devices({"a": 10.0})
    advance_to(clock, 30.0)
    sched.set_devices({"a": 5.0})
    start = len(agents.times("a"))
    advance_to(clock, 60.0)
    later = agents.times("a")[start:]
    assert [b - a for a, b in zip(later, later[1:])] == pytest.approx([5.0] * (len(later) - 1))
    assert len(later) >= 5


def test_stop_cancels_every_tick() -> None:
    clock, agents, _, sched = make()
    sched.set_devices({f"d{i}": 10.0 for i in range(5)})
    sched.stop()
    assert clock.getDelayedCalls() == []
    advance_to(clock, 30.0)
    assert agents.starts == []
