"""Drops told in the log one line per 10 s at most: the DropLog itself, the publisher's
full buffer and the status heartbeats it refuses (real SQLite buffer, no broker)."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.logger import LogLevel, Logger, formatEvent, globalLogPublisher

from connector import messages
from connector.buffer import BufferFull, SQLiteBuffer, ThreadedBuffer
from connector.droplog import DropLog
from connector.metrics import Counters
from connector.publisher import ReliablePublisher
from connector.status import StatusService


def capture() -> tuple[list[str], Logger]:
    lines: list[str] = []
    return lines, Logger(observer=lambda e: lines.append(formatEvent(e)))


def test_many_drops_in_10_s_make_one_line_then_one_more_with_the_counts():
    clock = task.Clock()
    lines, log = capture()
    counters = Counters("traps")
    drops = DropLog(clock, counters, log, interval=10)
    for _ in range(1000):
        drops.drop("journal_full")
        clock.advance(0.005)  # 5 s in all
    drops.drop("oversized", 3)
    assert len(lines) == 1
    assert lines[0].startswith("traps dropped: 1 journal full (totals: dropped_journal_full 1); ")
    clock.advance(4.9)
    assert len(lines) == 1
    clock.advance(0.2)
    assert len(lines) == 2
    assert lines[1].startswith("traps dropped: 999 journal full, 3 oversized (totals: "
                               "dropped_journal_full 1000, dropped_oversized 3); next report in "
                               "10 s at most")
    assert counters.get("dropped_journal_full") == 1000 and counters.get("dropped_oversized") == 3
    clock.advance(60)
    assert len(lines) == 2  # nothing dropped: nothing said
    drops.drop("journal_full")  # quiet for longer than the interval: told at once
    assert len(lines) == 3 and lines[2].startswith("traps dropped: 1 journal full")


def test_stop_tells_the_drops_not_told_yet():
    clock = task.Clock()
    lines, log = capture()
    drops = DropLog(clock, Counters("traps"), log)
    drops.drop("queue_full")
    drops.drop("queue_full", 41)
    assert len(lines) == 1
    drops.stop()
    assert len(lines) == 2 and "41 queue full" in lines[1]
    assert not clock.getDelayedCalls()  # the line that was due is not written twice
    drops.stop()
    assert len(lines) == 2


def test_subject_context_limits_and_counter_names():
    clock = task.Clock()
    lines, log = capture()
    counters = Counters("bus")
    drops = DropLog(clock, counters, log, subject="messages dropped by the publisher buffer b.db",
                    context="policy drop_oldest", counter_prefix="lost_")
    drops.drop_all({"refused": 1, "oldest": 5}, "max_bytes=100")
    drops.drop_all({"refused": 0, "oldest": 0}, "max_messages=3")  # nothing dropped: no limit told
    drops.drop("oldest", 2, "max_messages=3")
    drops.drop("oldest", 0)
    clock.advance(10)
    assert lines == [
        "messages dropped by the publisher buffer b.db (policy drop_oldest, max_bytes=100 "
        "reached): 5 oldest, 1 refused (totals: lost_oldest 5, lost_refused 1); next report "
        "in 10 s at most",
        "messages dropped by the publisher buffer b.db (policy drop_oldest, max_messages=3 "
        "reached): 2 oldest (totals: lost_oldest 7); next report in 10 s at most",
    ]
    assert counters.snapshot() == {"lost_refused": 1, "lost_oldest": 7}
    with pytest.raises(ValueError, match="interval must be > 0"):
        DropLog(clock, counters, log, 0)


def test_the_first_example_of_each_reason_is_told_with_the_counts():
    clock = task.Clock()
    lines, log = capture()
    drops = DropLog(clock, Counters("bus"), log, subject="messages dead-lettered",
                    counter_prefix="")
    drops.drop("invalid", example="not JSON (key a)")
    drops.drop("invalid", example="not JSON (key b)")
    drops.drop("invalid", example="not JSON (key c)")
    drops.drop("rejected", example="refused: user 'x'")
    drops.drop("rejected")
    drops.drop("oversized")  # no example: only counted
    clock.advance(10)
    drops.drop("invalid")
    drops.stop()
    assert lines == [
        "messages dead-lettered: 1 invalid (totals: invalid 1); first invalid: not JSON (key a); "
        "next report in 10 s at most",
        "messages dead-lettered: 2 invalid, 1 oversized, 2 rejected (totals: invalid 3, "
        "oversized 1, rejected 2); first invalid: not JSON (key b); first rejected: refused: "
        "user 'x'; next report in 10 s at most",
        # The examples of a line are not told again in the next one.
        "messages dead-lettered: 1 invalid (totals: invalid 4); next report in 10 s at most",
    ]


# -- the publisher's full buffer ------------------------------------------------


def perf(i: int) -> messages.Perf:
    return messages.Perf(source="t@n", host="h", address="a", device_type="t",
                         metrics=[messages.Metric(name="seq", value=i, kind="gauge", oid="1.3")])


@pytest.fixture
def warnings():
    """The warning lines of the core (buffer, publisher, status) while the test runs."""
    lines: list[str] = []

    def observer(event: dict) -> None:
        if event.get("log_level") is LogLevel.warn and \
                event.get("log_namespace", "").startswith("connector."):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


async def publisher(tmp_path, policy: str, max_messages: int) -> ReliablePublisher:
    """A publisher with no broker (every message goes to its buffer), its drop log on a
    test clock: the test decides when 10 s have passed."""
    buf = ThreadedBuffer(SQLiteBuffer(str(tmp_path / "b.sqlite3"), max_messages=max_messages,
                                      policy=policy), reactor)
    p = ReliablePublisher(buf, "test", "centaure", Counters("test"), reactor)
    p.drops.clock = task.Clock()
    await p.start()
    return p


@pytest_twisted.ensureDeferred
async def test_a_full_buffer_refusing_batch_after_batch_logs_one_line_per_10_s(tmp_path, warnings):
    p = await publisher(tmp_path, "refuse_newest", 3)
    path = str(tmp_path / "b.sqlite3")
    refused = 0
    for i in range(40):  # one append per publish: 37 of them refused
        results = await defer.DeferredList([p.publish(perf(i))], consumeErrors=True)
        refused += sum(1 for ok, r in results if not ok and r.check(BufferFull))
    assert refused == 37
    assert warnings == [
        f"messages dropped by the publisher buffer {path} (policy refuse_newest, max_messages=3 "
        "reached): 1 refused (totals: dropped_refused 1); next report in 10 s at most"]
    p.drops.clock.advance(10)
    assert len(warnings) == 2
    assert warnings[1].startswith(f"messages dropped by the publisher buffer {path} (policy "
                                  "refuse_newest, max_messages=3 reached): 36 refused (totals: "
                                  "dropped_refused 37)")
    # /metrics: the total as before, and by reason.
    assert p.counters.get("dropped") == p.counters.get("dropped_refused") == 37
    for i in range(5):
        await defer.DeferredList([p.publish(perf(40 + i))], consumeErrors=True)
    assert len(warnings) == 2  # told within 10 s at most ...
    await p.stop(grace=0)
    assert len(warnings) == 3  # ... or when the publisher stops
    assert "5 refused (totals: dropped_refused 42)" in warnings[2]


@pytest_twisted.ensureDeferred
async def test_drop_oldest_tells_the_oldest_deleted(tmp_path, warnings):
    p = await publisher(tmp_path, "drop_oldest", 3)
    for i in range(20):
        await p.publish(perf(i))
    assert len(warnings) == 1 and "(policy drop_oldest, max_messages=3 reached): 1 oldest" \
        in warnings[0]
    await p.stop(grace=0)
    assert len(warnings) == 2 and "16 oldest (totals: dropped_oldest 17)" in warnings[1]
    assert p.counters.get("dropped") == p.counters.get("dropped_oldest") == 17


# -- status heartbeats ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_heartbeats_refused_by_a_full_buffer_are_counted_and_told_every_10_s(
        tmp_path, warnings):
    p = await publisher(tmp_path, "refuse_newest", 1)
    clock = p.drops.clock
    counters = Counters("snmp")
    status = StatusService(p, "snmp", "n1", counters, 1, lambda: {}, clock)
    for _ in range(25):
        await status.beat()  # the first is kept, 24 are refused
    ours = [w for w in warnings if w.startswith("status heartbeats dropped (connector snmp")]
    assert ours == ["status heartbeats dropped (connector snmp, max_messages reached): 1 buffer "
                    "full (totals: heartbeats_dropped_buffer_full 1); next report in 10 s at most"]
    clock.advance(10)
    ours = [w for w in warnings if w.startswith("status heartbeats dropped (connector snmp")]
    assert len(ours) == 2 and "23 buffer full" in ours[1]
    assert counters.get("heartbeats_dropped_buffer_full") == 24
    assert len(warnings) == 4  # and the publisher's two lines: no line per heartbeat
    status.startService()
    await status.stopService()  # its last heartbeat refused: told at once
    ours = [w for w in warnings if w.startswith("status heartbeats dropped (connector snmp")]
    assert len(ours) == 3 and "2 buffer full" in ours[2]  # the one at start, the last one
    await p.stop(grace=0)
