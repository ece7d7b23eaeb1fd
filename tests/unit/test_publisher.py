"""The reliable publisher's decisions, with a fake link and the real SQLite buffer."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from connector import messages
from connector.buffer import BufferFull, SQLiteBuffer, ThreadedBuffer
from connector.metrics import Counters
from connector.publisher import ReliablePublisher


class FakeLink:
    """Records what is sent; the test plays the broker's confirms."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []  # (tag, seq)
        self.tag = 0
        self.aborted = None

    def send(self, record):
        self.tag += 1
        self.sent.append((self.tag, messages.decode(record.body).metrics[0].value))
        return self.tag

    def abort(self, reason):
        self.aborted = reason


def perf(i: int) -> messages.Perf:
    return messages.Perf(source="t@n", host="h", address="a", device_type="t",
                         metrics=[messages.Metric(name="seq", value=i, kind="gauge", oid="1.3")])


async def make(tmp_path, **kw):
    policy = kw.pop("policy", "drop_oldest")
    max_messages = kw.pop("max_messages", 1_000_000)
    buf = ThreadedBuffer(SQLiteBuffer(str(tmp_path / "b.sqlite3"), max_messages=max_messages,
                                      policy=policy), reactor)
    p = ReliablePublisher(buf, "test", "centaure", Counters("test"), reactor, **kw)
    await p.start()
    return p


async def turn(n: int = 3) -> None:
    for _ in range(n):
        await task.deferLater(reactor, 0.01, lambda: None)


async def until(pred, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if pred():
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition not reached")


@pytest_twisted.ensureDeferred
async def test_direct_publish_is_held_once_sent(tmp_path):
    """A publish does not wait for the broker's confirm; a durable one does."""
    p = await make(tmp_path)
    link = FakeLink()
    p.link_up(link)
    held = p.publish(perf(0))
    assert held.called and link.sent == [(1, 0)] and p.in_flight == 1
    durable = p.publish(perf(1), durable=True)
    assert not durable.called and link.sent[1] == (2, 1)
    p.confirmed(2, multiple=True, ack=True)
    assert durable.called and p.in_flight == 0
    await p.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_multiple_ack_confirms_all_before(tmp_path):
    p = await make(tmp_path)
    p.link_up(FakeLink())
    ds = [p.publish(perf(i), durable=True) for i in range(5)]
    p.confirmed(3, multiple=True, ack=True)
    assert [d.called for d in ds] == [True, True, True, False, False]
    assert p.in_flight == 2
    await p.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_down_link_buffers_and_replays_in_order(tmp_path):
    p = await make(tmp_path, batch_size=4)
    ds = [p.publish(perf(i)) for i in range(10)]  # no link: to disk
    await defer.gatherResults(ds)  # accepted = on disk
    assert p.buffer.count() == 10
    link = FakeLink()
    p.link_up(link)
    await until(lambda: len(link.sent) == 10)
    assert [seq for _, seq in link.sent] == list(range(10))
    p.confirmed(10, multiple=True, ack=True)
    await until(lambda: p.buffer.count() == 0)
    await p.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_once_the_replay_has_sent_everything_new_messages_go_directly(tmp_path):
    """A steady stream does not go through the disk behind a replay that has caught up."""
    p = await make(tmp_path, batch_size=4)
    await defer.gatherResults([p.publish(perf(i)) for i in range(6)])  # no link: to disk
    link = FakeLink()
    p.link_up(link)
    early = p.publish(perf(6))  # the replay has not sent the rows yet: behind them, on disk
    await until(lambda: len(link.sent) == 7)
    # Every row sent (none confirmed, all still on disk): the next ones go directly.
    assert p.buffer.count() == 7
    later = [p.publish(perf(i)) for i in range(7, 10)]
    assert [seq for _, seq in link.sent] == list(range(10))
    assert p.buffer.count() == 7 and p.counters.get("messages_buffered") == 7
    p.confirmed(10, multiple=True, ack=True)
    assert early.called and all(d.called for d in later)
    await until(lambda: p.buffer.count() == 0)
    await p.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_unconfirmed_go_back_before_newer_messages(tmp_path):
    """In flight when the link drops = replayed before what was published after."""
    p = await make(tmp_path)
    link = FakeLink()
    p.link_up(link)
    early = [p.publish(perf(i)) for i in range(3)]
    p.link_down("lost")
    later = [p.publish(perf(i)) for i in range(3, 6)]
    await defer.gatherResults(early + later)
    link2 = FakeLink()
    p.link_up(link2)
    await until(lambda: len(link2.sent) == 6)
    assert [seq for _, seq in link2.sent] == [0, 1, 2, 3, 4, 5]
    await p.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_nack_sends_again(tmp_path):
    p = await make(tmp_path)
    link = FakeLink()
    p.link_up(link)
    d = p.publish(perf(7), durable=True)
    p.confirmed(1, multiple=False, ack=False)
    await d  # safe on disk
    await until(lambda: len(link.sent) == 2)
    assert link.sent[1][1] == 7
    assert p.counters.get("nacked") == 1
    await p.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_blocked_broker_sends_nothing_new(tmp_path):
    p = await make(tmp_path)
    link = FakeLink()
    p.link_up(link)
    p.blocked("low on memory")
    d = p.publish(perf(1))
    await d
    assert link.sent == [] and p.buffer.count() == 1
    p.unblocked()
    await until(lambda: len(link.sent) == 1)
    await p.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_confirm_timeout_drops_the_link(tmp_path):
    p = await make(tmp_path, confirm_timeout=0.2)
    link = FakeLink()
    p.link_up(link)
    d = p.publish(perf(1), durable=True)
    await until(lambda: link.aborted is not None, timeout=3)
    await d  # spilled to disk: durable
    assert p.counters.get("confirm_timeouts") == 1 and p.buffer.count() == 1
    await p.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_in_flight_window_holds_the_rest_in_memory(tmp_path):
    p = await make(tmp_path, max_in_flight=4)
    link = FakeLink()
    p.link_up(link)
    ds = [p.publish(perf(i)) for i in range(10)]
    assert len(link.sent) == 4 and p.buffer.count() == 0
    # Held once in the window; the others wait for room.
    assert [d.called for d in ds] == [True] * 4 + [False] * 6
    p.confirmed(4, multiple=True, ack=True)
    assert len(link.sent) == 8 and [d.called for d in ds] == [True] * 8 + [False] * 2
    p.confirmed(8, multiple=True, ack=True)
    p.confirmed(10, multiple=True, ack=True)
    assert all(d.called for d in ds)
    assert [s for _, s in link.sent] == list(range(10))
    await p.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_refuse_newest_fails_the_publish(tmp_path):
    p = await make(tmp_path, policy="refuse_newest", max_messages=3)
    results = await defer.DeferredList([p.publish(perf(i)) for i in range(5)],
                                       consumeErrors=True)
    ok = [r for r in results if r[0]]
    refused = [r[1] for r in results if not r[0]]
    assert len(ok) == 3 and len(refused) == 2
    assert all(f.check(BufferFull) for f in refused)
    assert p.counters.get("dropped") == 2
    await p.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_restart_continues_after_the_last_buffered_message(tmp_path):
    p = await make(tmp_path)
    await defer.gatherResults([p.publish(perf(i)) for i in range(3)])
    await p.stop(grace=0)
    p2 = await make(tmp_path)
    await defer.gatherResults([p2.publish(perf(i)) for i in range(3, 5)])
    link = FakeLink()
    p2.link_up(link)
    await until(lambda: len(link.sent) == 5)
    assert [s for _, s in link.sent] == [0, 1, 2, 3, 4]
    await p2.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_messages_published_before_start_follow_the_buffered_rows(tmp_path):
    """A heartbeat published while the buffer is still opening gets no clashing id."""
    p = await make(tmp_path)
    await defer.gatherResults([p.publish(perf(i)) for i in range(3)])  # rows 1..3 on disk
    await p.stop(grace=0)
    buf = ThreadedBuffer(SQLiteBuffer(str(tmp_path / "b.sqlite3")), reactor)
    p2 = ReliablePublisher(buf, "test", "centaure", Counters("test"), reactor)
    early = [p2.publish(perf(i)) for i in range(3, 5)]  # before start()
    await p2.start()
    await defer.gatherResults(early)
    link = FakeLink()
    p2.link_up(link)
    await until(lambda: len(link.sent) == 5)
    assert [s for _, s in link.sent] == [0, 1, 2, 3, 4]
    assert p2.counters.get("errors") == 0
    await p2.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_blocked_broker_in_flight_goes_to_disk_and_is_sent_once(tmp_path):
    """Unconfirmed when the broker blocks: on disk after confirm_timeout, link kept;
    the broker's late ack deletes the rows, nothing is sent twice."""
    p = await make(tmp_path, confirm_timeout=0.2)
    link = FakeLink()
    p.link_up(link)
    durable = [p.publish(perf(i), durable=True) for i in range(3)]
    p.blocked("low on memory")
    later = [p.publish(perf(i)) for i in range(3, 5)]
    await defer.gatherResults(later)  # blocked: straight to disk
    assert p.buffer.count() == 2 and not any(d.called for d in durable)
    await until(lambda: all(d.called for d in durable))  # saved after confirm_timeout
    assert p.buffer.count() == 5 and p.in_flight == 3
    assert link.aborted is None and p.counters.get("saved_in_flight") == 3
    p.unblocked()
    await until(lambda: len(link.sent) == 5)
    await turn(10)
    # The rows of the messages still in flight are not sent again, and the broker
    # has a whole confirm_timeout after the alarm to confirm them.
    assert [seq for _, seq in link.sent] == [0, 1, 2, 3, 4] and link.aborted is None
    p.confirmed(5, multiple=True, ack=True)
    await until(lambda: p.buffer.count() == 0)
    assert p.in_flight == 0 and len(link.sent) == 5
    await p.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_saved_in_flight_replayed_first_when_the_link_drops(tmp_path):
    """Saved while blocked, then the connection is lost: replayed in publish order."""
    p = await make(tmp_path, confirm_timeout=0.2)
    link = FakeLink()
    p.link_up(link)
    for i in range(3):
        p.publish(perf(i))
    p.blocked("low on memory")
    await defer.gatherResults([p.publish(perf(i)) for i in range(3, 5)])
    await until(lambda: p.buffer.count() == 5)
    p.link_down("lost")
    link2 = FakeLink()
    p.link_up(link2)
    await until(lambda: len(link2.sent) == 5)
    assert [seq for _, seq in link2.sent] == [0, 1, 2, 3, 4]
    p.confirmed(5, multiple=True, ack=True)
    await until(lambda: p.buffer.count() == 0)
    await p.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_ack_while_saving_deletes_the_row(tmp_path):
    """Confirmed while its row is being written: the row goes once written."""
    p = await make(tmp_path, confirm_timeout=0.2)
    link = FakeLink()
    p.link_up(link)
    d = p.publish(perf(0), durable=True)
    p.blocked("low on memory")
    await until(lambda: p.counters.get("saved_in_flight") == 1)
    p.unblocked()
    p.confirmed(1, multiple=False, ack=True)  # the write is still on its thread
    assert d.called
    await until(lambda: p.buffer.count() == 0 and not p._flushing and not p._deleting)
    await turn()
    assert p.buffer.count() == 0 and link.sent == [(1, 0)]
    await p.stop(grace=0)


class BrokerLink(FakeLink):
    """Confirms every message 2 ms after it is sent: nacks while ``accepting`` is
    False (a quorum queue without a leader), acks otherwise; records what it accepted."""

    def __init__(self, publisher: ReliablePublisher) -> None:
        super().__init__()
        self.publisher = publisher
        self.accepting = False
        self.accepted: list[int] = []
        self.up = True

    def send(self, record):
        tag = super().send(record)
        reactor.callLater(0.002, self._confirm, tag, self.sent[-1][1])
        return tag

    def _confirm(self, tag: int, seq: int) -> None:
        if not self.up:
            return
        ack = self.accepting
        if ack:
            self.accepted.append(seq)
        self.publisher.confirmed(tag, multiple=False, ack=ack)


@pytest_twisted.ensureDeferred
async def test_nacked_after_the_replay_moved_on_is_sent_again_on_the_same_link(tmp_path):
    """A message nacked once the replay has passed its place is not left on disk
    until the next connection."""
    p = await make(tmp_path)
    link = FakeLink()
    p.link_up(link)
    p.publish(perf(0))  # direct: tag 1
    p.publish(perf(1))  # direct: tag 2
    p.blocked("low on memory")
    await p.publish(perf(2))  # on disk
    p.unblocked()
    await until(lambda: [s for _, s in link.sent] == [0, 1, 2])  # the replay sent 2
    p.confirmed(1, multiple=False, ack=True)
    p.confirmed(3, multiple=False, ack=True)
    p.confirmed(2, multiple=False, ack=False)  # 1, nacked after the replay passed it
    await until(lambda: [s for _, s in link.sent][3:] == [1], timeout=3)
    p.confirmed(4, multiple=False, ack=True)
    await until(lambda: p.buffer.count() == 0 and p.in_flight == 0)
    assert p.counters.get("nacked") == 1
    await p.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_replay_read_begun_on_the_old_link_is_not_sent_first_on_the_new_one(tmp_path):
    """The link drops while the replay reads the next rows: the new link starts over
    with the unconfirmed rows, in publish order."""
    p = await make(tmp_path, max_in_flight=4, batch_size=4)
    await defer.gatherResults([p.publish(perf(i)) for i in range(10)])  # no link: on disk
    link = FakeLink()
    p.link_up(link)
    await until(lambda: len(link.sent) == 4)
    p.confirmed(2, multiple=True, ack=True)  # room: the next rows are being read
    assert p._reading
    p.link_down("lost")
    link2 = FakeLink()
    p.link_up(link2)
    await until(lambda: len(link2.sent) >= 4)
    sent = [s for _, s in link2.sent]
    assert sent[:4] == [2, 3, 4, 5]
    await p.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_failover_to_a_node_that_nacks_for_a_while_keeps_publish_order(tmp_path):
    """After a failover the new node nacks everything until its queue has a leader
    again: every message is accepted once, first arrivals in publish order."""
    p = await make(tmp_path, batch_size=20)
    old = BrokerLink(p)
    old.accepting = True
    p.link_up(old)
    n, seq = 1000, 0
    for _ in range(10):
        for _ in range(10):
            p.publish(perf(seq))
            seq += 1
        await turn(1)
    old.up = False  # killed: what it had not confirmed is lost with it
    p.link_down("lost")
    new = BrokerLink(p)
    p.link_up(new)
    while seq < n:
        for _ in range(10):
            p.publish(perf(seq))
            seq += 1
        await turn(1)
        if seq == 500:
            new.accepting = True  # the queue has a leader again
    await until(lambda: p.backlog == 0 and p.in_flight == 0, timeout=30)
    first = list(dict.fromkeys(old.accepted + new.accepted))
    assert sorted(first) == list(range(n)), "some messages were never accepted"
    assert first == list(range(n)), f"out of order, e.g. {[(a, b) for a, b in zip(first, first[1:]) if b < a][:3]}"
    assert p.counters.get("nacked") > 0
    await p.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_after_a_nack_one_message_probes_the_broker_before_the_rest(tmp_path):
    """The broker nacked: the next messages are not pipelined behind one it may nack
    again, else those it accepts meanwhile would overtake the ones it refused."""
    p = await make(tmp_path)
    link = FakeLink()
    p.link_up(link)
    for i in range(5):
        p.publish(perf(i))  # tags 1..5
    for tag in range(1, 6):
        p.confirmed(tag, multiple=False, ack=False)
    await defer.gatherResults([p.publish(perf(i)) for i in range(5, 10)])
    await until(lambda: len(link.sent) == 6)
    await turn(10)
    assert [s for _, s in link.sent][5:] == [0] and p.in_flight == 1
    p.confirmed(6, multiple=False, ack=False)  # refused again: probe again
    await until(lambda: len(link.sent) == 7)
    await turn(10)
    assert [s for _, s in link.sent][6:] == [0] and p.in_flight == 1
    p.confirmed(7, multiple=False, ack=True)  # accepted: the rest follow, in order
    await until(lambda: len(link.sent) == 16)
    assert [s for _, s in link.sent][7:] == list(range(1, 10))
    p.confirmed(16, multiple=True, ack=True)
    await until(lambda: p.buffer.count() == 0)
    await p.stop(grace=0)


@pytest_twisted.ensureDeferred
async def test_a_broker_that_keeps_nacking_is_probed_after_a_growing_delay(tmp_path):
    """A queue that refuses everything (full, reject-publish) for a second: a few
    probes and one warning line, not a busy loop of re-sends and a line per nack;
    once it accepts, every message is delivered once, in publish order."""
    lines: list[str] = []

    def observe(event) -> None:
        if event.get("log_level") == LogLevel.warn and "nacked" in formatEvent(event):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        p = await make(tmp_path, nack_backoff_initial=0.05, nack_backoff_max=0.2)
        link = BrokerLink(p)  # nacks until accepting
        p.link_up(link)
        for i in range(20):
            p.publish(perf(i))
        await until(lambda: p.counters.get("nacked") >= 20)
        sent = len(link.sent)
        await task.deferLater(reactor, 1.0, lambda: None)
        # Delays 0.05, 0.1, 0.2, 0.2...: at most 7 probes in a second on any machine.
        probes = len(link.sent) - sent
        assert 1 <= probes <= 7, probes
        assert p.counters.get("nacked") == 20 + probes
        assert len(lines) == 1, lines
        assert "messages nacked by the broker (kept in the buffer, sent again after a " \
               "growing delay of up to 0.2 s): 1 nacked (totals: nacked 1); first nacked: " \
               "exchange centaure.perf, routing key 'perf.h'" in lines[0]
        link.accepting = True
        await until(lambda: p.backlog == 0 and p.in_flight == 0, timeout=10)
        assert link.accepted == list(range(20))
        await p.stop(grace=0)
    finally:
        globalLogPublisher.removeObserver(observe)
    # The nacks not told yet are told at stop.
    assert len(lines) == 2 and f"(totals: nacked {20 + probes})" in lines[1], lines


def test_nack_backoff_must_grow_from_a_positive_delay(tmp_path):
    buf = ThreadedBuffer(SQLiteBuffer(str(tmp_path / "b.sqlite3")), reactor)
    with pytest.raises(ValueError, match="initial=0, max=2"):
        ReliablePublisher(buf, "test", "centaure", Counters("test"), reactor,
                          nack_backoff_initial=0, nack_backoff_max=2)
