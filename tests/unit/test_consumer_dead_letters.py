"""Dead letters as the log tells them, and dead letters the publisher refuses.

A flood of invalid messages is one warning line every 10 s at most (the
first at once) with the counts by reason and the first of each; a dead
letter refused by the publisher (a full ``refuse_newest`` buffer: the real
SQLite buffer here) puts its original back on the queue after a growing
delay, never acked and never lost, and is told the same way. The consumer
runs on a test clock: the test decides when seconds pass.
"""

from __future__ import annotations

import weakref
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from connector import messages
from connector.buffer import BufferFull, SQLiteBuffer, ThreadedBuffer
from connector.consumer import REASON_HEADER, Consumer, DeadLetterLog, Delivery
from connector.metrics import Counters
from connector.publisher import ReliablePublisher
from connector_alarms.authz import CommandPolicy

MALFORMED = b'{"type": "perf", "v": 1, "host": 3'


#: The consumers this module made (their log lines are the ones the tests read).
_CONSUMERS: weakref.WeakSet = weakref.WeakSet()


def _someone_elses(source: object) -> bool:
    return isinstance(source, Consumer) and not any(source is c for c in _CONSUMERS)


@pytest.fixture
def warnings():
    """The consumer's warning lines while the test runs."""
    lines: list[str] = []

    def observer(event: dict) -> None:
        # Only this module's consumers: one an earlier test left retrying on the shared
        # reactor would otherwise add its own lines.
        if event.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical) and \
                event.get("log_namespace", "").startswith("connector.consumer") and \
                not _someone_elses(event.get("log_source")):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


class DeadLetters:
    """A publisher that holds every dead letter, or refuses them while ``refuse`` is set."""

    def __init__(self) -> None:
        self.held: list[tuple[bytes, dict]] = []
        self.refuse = False

    def publish_raw(self, exchange, routing_key, body, properties, durable=False):
        assert durable  # the original is acked on the strength of it
        if self.refuse:
            return defer.fail(BufferFull("publisher buffer is full (max_messages, policy "
                                         "refuse_newest)", "max_messages"))
        self.held.append((body, properties))
        return defer.succeed(None)


class Queue:
    """What the transport saw of each delivery: acked, put back, or still held."""

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.requeued: list[int] = []

    def deliver(self, consumer: Consumer, tag: int, body: bytes = MALFORMED,
                user_id: str | None = None) -> defer.Deferred:
        delivery = Delivery(body=body, exchange="centaure.perf", routing_key=f"perf.h{tag}",
                            message_id=f"m{tag}", tag=tag, user_id=user_id)
        return consumer.deliver(delivery, lambda: self.acked.append(tag),
                                lambda: self.requeued.append(tag))


class Handler:
    """Fails while ``fail`` is set; refuses alarm commands as the correlator does."""

    def __init__(self) -> None:
        self.fail = False
        self.policy = CommandPolicy(operators=["ops1"])

    def handle(self, message, delivery):
        if isinstance(message, messages.AlarmCommand):
            self.policy.authorize(message, delivery.user_id)
        if self.fail:
            raise RuntimeError("database unavailable")


def consumer(clock: task.Clock, publisher, retry_limit: int = 2) -> Consumer:
    c = Consumer("centaure.db", Handler(), publisher, "centaure.dead", Counters("bus"), clock,
                 retry_limit=retry_limit, retry_delay=0.1)
    _CONSUMERS.add(c)
    return c


def test_a_flood_of_malformed_messages_is_one_line_then_one_more_with_the_counts(warnings):
    clock, dead, queue = task.Clock(), DeadLetters(), Queue()
    c = consumer(clock, dead)
    for tag in range(1000):
        queue.deliver(c, tag)
        clock.advance(0.005)  # 5 s in all
    assert len(dead.held) == 1000 and queue.acked == list(range(1000))
    assert dead.held[0][1]["headers"][REASON_HEADER].startswith("invalid message: invalid JSON")
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "messages dead-lettered: 1 invalid (totals: invalid 1); first invalid: invalid JSON")
    assert "(queue centaure.db, routing key 'perf.h0', message id 'm0')" in warnings[0]
    clock.advance(4.9)
    assert len(warnings) == 1
    clock.advance(0.2)
    assert len(warnings) == 2
    assert warnings[1].startswith("messages dead-lettered: 999 invalid (totals: invalid 1000); "
                                  "first invalid: invalid JSON")
    assert "routing key 'perf.h1'," in warnings[1]  # the first of that period
    assert warnings[1].endswith("next report in 10 s at most")
    assert c.counters.get("invalid") == c.counters.get("dead_lettered") == 1000
    clock.advance(60)
    assert len(warnings) == 2  # nothing more: nothing said


def test_a_refused_alarm_command_is_named_in_the_line_among_malformed_ones(warnings):
    clock, dead, queue = task.Clock(), DeadLetters(), Queue()
    c = consumer(clock, dead)
    queue.deliver(c, 0)
    command = messages.AlarmCommand(source="cli@n1", ref=7, action="clear", user="ops1",
                                    host="h1")
    for tag in range(1, 100):
        queue.deliver(c, tag)
    queue.deliver(c, 100, messages.encode(command), user_id="mallory")
    queue.deliver(c, 101, messages.encode(command), user_id="eve")
    clock.advance(10)
    assert len(warnings) == 2
    assert warnings[1].startswith("messages dead-lettered: 99 invalid, 2 refused (totals: "
                                  "invalid 100, refused 2); first invalid: invalid JSON")
    assert "; first refused: clear of alarm 7 refused: broker user 'mallory' is neither in " \
           "[correlator] operators nor in [correlator] command_services (queue centaure.db, " \
           "routing key 'perf.h100', message id 'm100'); next report" in warnings[1]
    assert c.counters.get("refused") == 2 and c.counters.get("rejected") == 0
    assert len(queue.acked) == 102
    assert "broker user 'eve'" in dead.held[-1][1]["headers"][REASON_HEADER]


def test_the_queues_of_one_bus_share_one_line(warnings):
    """A flood spread over many queues (partitions) is still one line every 10 s."""
    clock, counters, dead, queue = task.Clock(), Counters("bus"), DeadLetters(), Queue()
    shared = DeadLetterLog(clock, counters)
    consumers = [Consumer(f"centaure.correlator.{p}", Handler(), dead, "centaure.dead",
                          counters, clock, dead_letters=shared) for p in range(16)]
    _CONSUMERS.update(consumers)
    for tag in range(160):
        queue.deliver(consumers[tag % 16], tag)
    clock.advance(10)
    assert len(warnings) == 2 and "159 invalid (totals: invalid 160)" in warnings[1]
    assert "(queue centaure.correlator.1, " in warnings[1]
    shared.stop()
    assert len(warnings) == 2


def test_a_line_is_one_line_whatever_the_routing_key_holds(warnings):
    clock, queue = task.Clock(), Queue()
    c = consumer(clock, DeadLetters())
    delivery = Delivery(body=MALFORMED, exchange="e", routing_key="perf.x\nFAKE LINE" + "k" * 500,
                        tag=1)
    c.deliver(delivery, lambda: None, lambda: None)
    assert len(warnings) == 1 and "\n" not in warnings[0] and len(warnings[0]) < 600
    assert "'perf.x?nFAKE" in warnings[0] or "'perf.x\\nFAKE" in warnings[0]


def test_a_refused_dead_letter_puts_the_message_back_later_and_loses_nothing(warnings):
    clock, dead, queue = task.Clock(), DeadLetters(), Queue()
    c = consumer(clock, dead)
    dead.refuse = True
    for tag in range(50):
        queue.deliver(c, tag)
    # Neither acked nor put back at once: it would spin on a publisher still refusing.
    assert queue.acked == [] and queue.requeued == []
    clock.advance(0.99)
    assert queue.requeued == []
    clock.advance(0.01)
    assert queue.requeued == list(range(50))
    assert c.counters.get("dead_letter_failed_buffer_full") == 50
    assert c.counters.get("dead_lettered") == 0
    # Delivered again, refused again: the next delay is longer (2 s).
    for tag in range(50):
        queue.deliver(c, tag)
    clock.advance(1.9)
    assert len(queue.requeued) == 50
    clock.advance(0.1)
    assert len(queue.requeued) == 100
    ours = [w for w in warnings if w.startswith("messages not dead-lettered")]
    assert ours == [
        "messages not dead-lettered (the publisher refused the dead letter) and put back on "
        "their queue after a delay: 1 buffer full (totals: dead_letter_failed_buffer_full 1); "
        "first buffer full: publisher buffer is full (max_messages, policy refuse_newest); back "
        "on its queue in 1 s (queue centaure.db, routing key 'perf.h0', message id 'm0'); next "
        "report in 10 s at most"]
    # The publisher takes them again: every one is dead-lettered once, then acked.
    dead.refuse = False
    for tag in range(50):
        queue.deliver(c, tag)
    assert sorted(queue.acked) == list(range(50)) and len(dead.held) == 50
    assert c.counters.get("dead_lettered") == 50
    clock.advance(10)
    ours = [w for w in warnings if w.startswith("messages not dead-lettered")]
    assert len(ours) == 2 and ": 99 buffer full (totals: dead_letter_failed_buffer_full 100)" \
        in ours[1]
    # Held again: the delay starts over from 1 s at the next refusal.
    dead.refuse = True
    queue.deliver(c, 99)
    clock.advance(1)
    assert queue.requeued[-1] == 99


def test_a_message_whose_retries_are_spent_is_dead_lettered_at_its_next_failure(warnings):
    clock, dead, queue = task.Clock(), DeadLetters(), Queue()
    c = consumer(clock, dead, retry_limit=2)
    c.handler.fail = True
    body = messages.encode(messages.Perf(source="s@n", host="h", address="a", device_type="t",
                                         metrics=[]))
    for _ in range(2):  # the first try and a retry
        queue.deliver(c, 1, body)
        clock.advance(60)
    assert len(queue.requeued) == 2 and dead.held == []
    dead.refuse = True
    queue.deliver(c, 1, body)  # the 3rd failure: dead-lettered, refused, put back
    clock.advance(60)
    assert len(queue.requeued) == 3 and queue.acked == []
    dead.refuse = False
    queue.deliver(c, 1, body)  # failing still: dead-lettered at once, not retried twice more
    assert queue.acked == [1] and len(dead.held) == 1
    assert dead.held[0][1]["headers"][REASON_HEADER] == \
        "handler failed 3 times: database unavailable"


@pytest_twisted.ensureDeferred
async def test_a_full_refuse_newest_buffer_loses_no_invalid_message(tmp_path, warnings):
    """The real publisher with no broker: its 5-message buffer takes 5 dead letters and
    refuses the rest; their originals go back to the queue, none is acked."""
    buf = ThreadedBuffer(SQLiteBuffer(str(tmp_path / "b.sqlite3"), max_messages=5,
                                      policy="refuse_newest"), reactor)
    counters = Counters("bus")
    publisher = ReliablePublisher(buf, "db", "centaure", counters, reactor)
    await publisher.start()
    try:
        clock, queue = task.Clock(), Queue()
        c = Consumer("centaure.db", Handler(), publisher, "centaure.dead", counters, clock)
        delivered = [queue.deliver(c, tag) for tag in range(20)]
        # The buffer's thread takes or refuses each one.
        while counters.get("messages_buffered") + counters.get("dropped_refused") < 20:
            await task.deferLater(reactor, 0.01, lambda: None)
        assert len(queue.acked) == 5 and queue.requeued == []
        clock.advance(1)
        await defer.gatherResults(delivered)
        assert sorted(queue.acked + queue.requeued) == list(range(20))
        assert counters.get("dead_letter_failed_buffer_full") == 15
        assert buf.count() == 5
    finally:
        await publisher.stop(grace=0)
