"""The reliable publisher: publisher confirms in memory, SQLite on disk.

``publish`` never waits on the broker. Its Deferred fires once the message is
*held* by the publisher:

- in memory, inside the in-flight window: sent on the channel and kept until
  the broker confirms it; whatever the broker then does (blocks, hangs, nacks,
  drops the connection) the message goes to the disk buffer and is replayed.
  Held in memory is lost by a kill -9 of this process unless the broker got it
  first; so was an unconfirmed message before ``publish`` stopped waiting for
  its confirm (the caller simply was not told about it yet);
- or on disk, committed to the SQLite buffer: it survives a kill -9.

A caller that drops its own copy of the message once told (an outbox row, an
acked input, a dead letter's original) passes ``durable=True``: its Deferred
fires once the broker confirmed the message or it is committed to the buffer,
which is at most about ``confirm_timeout`` after it was sent (see below).
Nothing *durable* is ever lost, even by a kill -9; a message may be delivered
twice after a failure (at-least-once), never zero times.

How a message travels:

- Direct: the link is up, unblocked and the disk buffer holds nothing that
  the replay has not sent yet: the message is sent at once (or, when ``max_in_flight`` messages already await a
  confirm, waits in memory for room) and kept until the broker acks it.
- Buffered: when the link is down, blocked or not confirming, it is appended
  to the SQLite buffer, and replayed from there, in order, when the link is
  usable again; a buffered row is deleted only once the broker confirmed it.

A message in flight for more than ``confirm_timeout``: when the broker is not
blocked, the connection is dropped and every unconfirmed message goes to the
buffer, to be replayed on the next one. When it is blocked (a memory or disk
alarm: a broker confirms nothing it has not read yet), the connection is kept
and the unconfirmed messages are *also* written to the buffer, staying in
flight: once unblocked, the broker confirms them and their rows are deleted
(delivered once); if the connection is lost first, their rows are replayed.
Replaying a message the broker had taken but not confirmed delivers it twice.
Downstream tolerates it: the SQL writer inserts with insert-ignore on natural
keys and message ids, the correlator drops ids its host has seen, the
alerter's evaluator publishes transitions only (but a window leaf counts a
repeated sample again); see ``docs/design.md``, "Delivery guarantees".

Every message gets a sequence number when it is published and keeps it in the
buffer, so that messages that were in flight when the link dropped go back to
the buffer *before* the ones published after them: replay order is publish
order. The replay reads the buffer in id order from a cursor; a row written
behind the cursor (a message nacked or spilled after the replay passed its
place) starts the replay over from the beginning, once the rows in flight are
settled, and a read begun before that (or before a new link) is discarded.

A nack (a quorum queue without a leader, just after a failover, nacks every
message for a while) puts the publisher in probing mode: new messages go to
the buffer, and the replay sends one message at a time, each once the
previous one is confirmed, until the broker acks one; then the rest follow at
full speed. Messages pipelined behind a nacked one would otherwise be
accepted ahead of it as soon as the broker accepts again. Each probe waits
a delay after the nack before it (``nack_backoff_initial``, doubled after
every refused probe up to ``nack_backoff_max``, back to the start on the
probe's ack or a new link): a queue that keeps refusing (full with
``x-overflow = reject-publish``, a quorum queue without a leader for long)
costs a probe every few seconds, not a busy loop, and its messages stay in
the buffer. Nacks are counted (``nacked``) and told in one warning line
every 10 s at most.

The publisher does not know AMQP: it drives an ``IPublishLink`` (the AMQP
adapter, or a fake in unit tests) and is told of acks, nacks, link up/down and
blocked/unblocked.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import OrderedDict, deque
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Interface, implementer

from connector import messages
from connector.buffer import AppendResult, BufferedMessage, BufferFull, ThreadedBuffer
from connector.droplog import DropLog
from connector.interfaces import IPublisher
from connector.metrics import Counters


class PublisherClosed(Exception):
    """The publisher takes no message: its buffer never opened (the cause is logged once)."""


class IPublishLink(Interface):
    """A channel in confirm mode, as the publisher sees it."""

    def send(record):
        """Send a ``BufferedMessage`` now; return its delivery tag (an int)."""

    def abort(reason):
        """Drop the connection (the broker stopped confirming)."""


class _Pending:
    """A message sent and not yet confirmed, or waiting to be buffered."""

    __slots__ = ("seq", "record", "deferred", "buffered", "sent_at", "durable", "saving",
                 "left")

    def __init__(self, seq: int, record: BufferedMessage, deferred: defer.Deferred | None,
                 buffered: bool, durable: bool = True) -> None:
        self.seq = seq
        self.record = record
        self.deferred = deferred  # None once the caller was told
        self.buffered = buffered  # True: the row is in SQLite and must be deleted on ack
        self.sent_at = 0.0
        self.durable = durable  # tell the caller on confirm or disk, not on send
        self.saving = False  # its row is being written while it stays in flight
        self.left: str | None = None  # while saving, how it left the window: "acked", "requeued"


@implementer(IPublisher)
class ReliablePublisher:
    """Publishes with confirms, spills to the SQLite buffer, replays in order."""

    log = Logger()

    def __init__(
        self,
        buffer: ThreadedBuffer,
        app_id: str,
        exchange_prefix: str,
        counters: Counters,
        clock: IReactorTime,
        max_in_flight: int = 2000,
        batch_size: int = 500,
        confirm_timeout: float = 5.0,
        partitions: int = 0,
        nack_backoff_initial: float = 0.1,
        nack_backoff_max: float = 2.0,
    ) -> None:
        if not 0 < nack_backoff_initial <= nack_backoff_max:
            raise ValueError(
                "nack backoff must satisfy 0 < initial <= max, got "
                f"initial={nack_backoff_initial!r}, max={nack_backoff_max!r}")
        self.buffer = buffer
        #: ``[bus] partitions``: routing keys carry the host's partition when set.
        self.partitions = partitions
        self.app_id = app_id
        self.exchange_prefix = exchange_prefix
        self.counters = counters
        self.clock = clock
        self.max_in_flight = max_in_flight
        self.batch_size = batch_size
        self.confirm_timeout = confirm_timeout

        self._link: IPublishLink | None = None
        self._blocked = False
        self._seq = 0
        self._in_flight: OrderedDict[int, _Pending] = OrderedDict()  # tag -> pending
        self._waiting: deque[_Pending] = deque()  # connected, waiting for room in flight
        self.max_waiting = max(10 * max_in_flight, 10_000)
        self._to_buffer: list[_Pending] = []
        self._to_delete: list[int] = []
        self._deleting_ids: list[int] = []
        self._flushing = False
        self._deleting = False
        self._reading = False
        self._replay_cursor = 0  # every row up to this id was sent on the current link
        self._rewind = False  # a row behind the cursor awaits replay
        self._epoch = 0  # changes when the replay starts over: a read begun before is stale
        self._probing = False  # after a nack: one message in flight until one is acked
        self._probe_tag: int | None = None  # the delivery tag of the message probing
        self.nack_backoff_initial = nack_backoff_initial
        self.nack_backoff_max = nack_backoff_max
        self._nack_delay = nack_backoff_initial  # the wait before the next probe
        self._probe_call = None  # while active, no probe is sent
        self._delete_call = None
        self._watchdog = None
        self._stopped = False
        self._started = False
        self._start_error: Exception | None = None
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:16] + "-"
        store = buffer.buffer
        #: What the full buffer refused (``dropped_refused``) or deleted to make room
        #: (``dropped_oldest``): counted, and told in one line every 10 s at most.
        self.drops = DropLog(clock, counters, self.log,
                             subject=f"messages dropped by the publisher buffer {store.path}",
                             context=f"policy {store.policy}")
        #: Messages the broker refused (``nacked``): they stay in the buffer and are
        #: sent again; told in one line every 10 s at most, not one per nack.
        self.nacks = DropLog(clock, counters, self.log, subject="messages nacked by the broker",
                             context="kept in the buffer, sent again after a growing delay "
                                     f"of up to {nack_backoff_max:g} s",
                             counter_prefix="")

    # -- lifecycle -------------------------------------------------------

    @defer.inlineCallbacks
    def start(self):
        """Open the buffer and continue its sequence numbers.

        Messages published before the buffer is open (a connector's first
        heartbeat, say) wait in memory and are numbered after the rows the
        buffer already holds.
        """
        try:
            yield self.buffer.start()
        except Exception as e:
            # The messages waiting for the open are refused at once, not held
            # until stop(): the process is about to report the open error.
            self._start_error = e
            self._refuse_unstarted()
            raise
        self._seq = max(self._seq, self.buffer.last_id())
        for pending in self._to_buffer:
            self._seq += 1
            pending.seq = self._seq
        self._started = True
        self.counters.set("buffered", self.buffer.count())
        if self._to_buffer and not self._flushing:
            self._flush()
        self._watchdog = task.LoopingCall(self._check_confirms)
        self._watchdog.clock = self.clock
        self._watchdog.start(max(self.confirm_timeout / 4, 0.1), now=False)

    @defer.inlineCallbacks
    def stop(self, grace: float = 5.0):
        """Wait up to ``grace`` s for confirms, then put the rest on disk."""
        self._stopped = True
        if not self._started:
            # The buffer never opened: nothing was accepted, nothing to keep.
            self._refuse_unstarted()
            return
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._cancel_probe_delay()
        deadline = self.clock.seconds() + grace
        while self._in_flight and self._link is not None and self.clock.seconds() < deadline:
            yield _sleep(self.clock, 0.05)
        self._spill_in_flight()
        try:
            while self._flushing or self._to_buffer or self._deleting or self._to_delete:
                if not self._flushing and self._to_buffer:
                    self._flush()
                if not self._deleting and self._to_delete:
                    self._delete_acked()
                yield _sleep(self.clock, 0.01)
            yield self.buffer.stop()
        finally:
            self.drops.stop()
            self.nacks.stop()

    def _refuse_unstarted(self) -> None:
        """Fail what waits for a buffer that did not (or will not) open."""
        if self._start_error is not None:
            reason = f"the backup buffer did not open ({self._start_error})"
        else:
            reason = "the publisher stopped before its backup buffer opened"
        waiting, self._to_buffer = self._to_buffer, []
        for pending in waiting:
            pending.deferred.errback(PublisherClosed(reason))

    # -- the link, as told by the adapter -------------------------------

    def link_up(self, link: IPublishLink) -> None:
        """A channel in confirm mode is ready: replay the backlog first."""
        self._link = link
        self._blocked = False
        # Another connection (maybe another node): probe it at once.
        self._cancel_probe_delay()
        self._nack_delay = self.nack_backoff_initial
        self._restart_replay()
        self._pump()

    def link_down(self, reason: object = None) -> None:
        """The connection is gone: unconfirmed messages go to the buffer."""
        if self._link is None:
            return
        self._link = None
        self._probe_tag = None
        self._spill_in_flight()

    def blocked(self, reason: str) -> None:
        """The broker blocks publishers (memory or disk alarm)."""
        self.log.warn("broker blocked publishing: {reason}", reason=reason)
        self._blocked = True
        self.counters.inc("blocked")
        self._spill_waiting()

    def unblocked(self) -> None:
        """The broker accepts messages again."""
        self.log.info("broker unblocked publishing")
        self._blocked = False
        # What was sent before the alarm gets a whole confirm_timeout from now:
        # the broker could not confirm it while blocked.
        now = self.clock.seconds()
        for pending in self._in_flight.values():
            pending.sent_at = now
        self._pump()

    def confirmed(self, tag: int, multiple: bool, ack: bool) -> None:
        """The broker acked (or nacked) ``tag`` (and all before it if ``multiple``)."""
        if multiple:
            done = []
            for t in self._in_flight:
                if t > tag:
                    break
                done.append(t)
            entries = [self._in_flight.pop(t) for t in done]
        else:
            entry = self._in_flight.pop(tag, None)
            entries = [entry] if entry is not None else []
        if ack:
            if self._probe_tag is not None and tag >= self._probe_tag:
                # The broker accepts again: back to a full in-flight window.
                self._probing, self._probe_tag = False, None
                self._nack_delay = self.nack_backoff_initial
            self._send_waiting()
            for entry in entries:
                if entry.buffered:
                    self._to_delete.append(entry.seq)
                elif entry.saving:
                    entry.left = "acked"  # its row is deleted once written
                if entry.deferred is not None:
                    d, entry.deferred = entry.deferred, None
                    d.callback(None)
            self.counters.inc("published", len(entries))
            if self._to_delete:
                self._schedule_delete()
        else:
            if entries:
                record = entries[0].record
                self.nacks.drop("nacked", len(entries), example=(
                    f"exchange {record.exchange}, routing key {record.routing_key!r}"))
                self._probing = True
                if self._probe_tag is not None and tag >= self._probe_tag:
                    self._probe_tag = None  # the probe was refused: another one follows
                self._delay_probe()
                # What waits for room would overtake the nacked messages: to disk, behind them.
                self._spill_waiting()
            self._requeue(entries)
        self._pump()

    # -- IPublisher -----------------------------------------------------

    def publish(self, message, headers=None, durable: bool = False,
                message_id: str | None = None) -> defer.Deferred:
        """Publish a message struct; see ``IPublisher.publish``."""
        record = BufferedMessage(
            exchange=messages.exchange_name(self.exchange_prefix, message.msg_type),
            routing_key=messages.routing_key(message, self.partitions),
            body=messages.encode(message),
            message_id=message_id or self._new_message_id(),
            msg_type=message.msg_type,
            timestamp=message.ts,
            headers=headers,
        )
        return self._accept(record, durable)

    def publish_raw(self, exchange, routing_key, body, properties,
                    durable: bool = False) -> defer.Deferred:
        """Publish an encoded body; ``properties`` may hold message_id, type, timestamp, headers."""
        record = BufferedMessage(
            exchange=exchange,
            routing_key=routing_key,
            body=body,
            message_id=properties.get("message_id") or self._new_message_id(),
            msg_type=properties.get("type", ""),
            timestamp=properties.get("timestamp") or time.time(),
            headers=properties.get("headers"),
        )
        return self._accept(record, durable)

    @property
    def backlog(self) -> int:
        """Messages waiting on disk, on their way to it, or waiting for room in flight."""
        return self.buffer.count() + len(self._to_buffer) + len(self._waiting)

    @property
    def in_flight(self) -> int:
        """Messages sent and not yet confirmed."""
        return len(self._in_flight)

    @property
    def usable(self) -> bool:
        """True while messages can go straight to the broker."""
        return self._link is not None and not self._blocked

    # -- internals --------------------------------------------------------

    def _new_message_id(self) -> str:
        # Unique without a uuid4 per message: a random per-process prefix
        # and the message's sequence number.
        return f"{self._id_prefix}{next(self._ids):x}"

    def _accept(self, record: BufferedMessage, durable: bool) -> defer.Deferred:
        if self._start_error is not None:
            return defer.fail(PublisherClosed(
                f"the backup buffer did not open ({self._start_error})"))
        d = defer.Deferred()
        if not self._started:
            # Numbered by start(), once the buffer's last id is known.
            self._to_buffer.append(_Pending(0, record, d, buffered=False, durable=durable))
            return d
        self._seq += 1
        pending = _Pending(self._seq, record, d, buffered=False, durable=durable)
        if self.usable and not self._has_backlog():
            if not self._waiting and len(self._in_flight) < self.max_in_flight:
                if self._send(pending):
                    _held(pending)
                return d
            if len(self._waiting) < self.max_waiting:
                self._waiting.append(pending)
                return d
        self._to_buffer.append(pending)
        if not self._flushing:
            self._flush()
        return d

    def _send_waiting(self) -> None:
        """Send what waits in memory while there is room in flight."""
        waiting, room = self._waiting, self.max_in_flight - len(self._in_flight)
        while waiting and room > 0 and self.usable:
            pending = waiting.popleft()
            if not self._send(pending):
                return
            _held(pending)
            room -= 1

    def _spill_waiting(self) -> None:
        """Messages waiting in memory go to disk (the link is not usable)."""
        if self._waiting:
            waiting, self._waiting = list(self._waiting), deque()
            self._requeue(waiting)

    def _has_backlog(self) -> bool:
        """Whether a new message must queue behind older ones (on disk) to keep the order."""
        if self._flushing or self._to_buffer or self._probing:
            return True
        if not self.buffer.count():
            return False
        # Rows on disk that the replay has sent already (in flight, or confirmed and
        # not yet deleted) are ahead of a new message on the channel: it may go
        # directly. Otherwise a steady stream would go through the disk for as
        # long as it lasts, every message appended just behind the replay.
        return self._rewind or self._link is None or self._replay_cursor < self.buffer.last_id()

    def _send(self, pending: _Pending) -> bool:
        try:
            tag = self._link.send(pending.record)
        except Exception as e:
            # The link broke under us: start over on a new connection.
            self.log.warn("publishing failed ({error}): reconnecting", error=e)
            link = self._link
            self.link_down(e)
            link.abort(str(e))
            self._requeue([pending])
            return False
        pending.sent_at = self.clock.seconds()
        self._in_flight[tag] = pending
        if self._probing and self._probe_tag is None:
            self._probe_tag = tag
        return True

    def _spill_in_flight(self) -> None:
        """Move every unconfirmed or waiting message to the buffer, keeping its seq."""
        entries = list(self._in_flight.values())
        self._in_flight.clear()
        if entries:
            self.counters.inc("spilled", len(entries))
        self._requeue(entries)
        self._spill_waiting()

    def _requeue(self, entries: list[_Pending]) -> None:
        for e in entries:
            if e.saving:
                e.left = "requeued"  # its row, being written, is replayed like any other
        direct = [e for e in entries if not e.buffered and not e.saving]
        if any(e.buffered or e.saving for e in entries):
            # Their rows are (or are about to be) on disk, behind the replay cursor.
            self._start_over()
        if direct:
            # Kept in seq order: the buffer's limits drop or refuse by age within a batch.
            self._to_buffer = sorted(direct + self._to_buffer, key=lambda p: p.seq)
            if not self._flushing:
                self._flush()

    def _start_over(self) -> None:
        """Rows behind the replay cursor await replay: start again from the first row."""
        self._rewind = True
        self._epoch += 1

    def _restart_replay(self) -> None:
        """A new link: the replay starts from the first row, any read under way is stale."""
        self._replay_cursor = 0
        self._rewind = False
        self._epoch += 1

    def _flush(self) -> None:
        """Append everything waiting to the buffer, in one transaction."""
        if not self._started:
            return
        batch, self._to_buffer = self._to_buffer, []
        if not batch:
            return
        self._flushing = True
        d = self.buffer.append([p.record for p in batch], ids=[p.seq for p in batch])
        d.addCallback(self._flushed, batch)
        d.addErrback(self._flush_failed, batch)

    def _flushed(self, result: AppendResult, batch: list[_Pending]) -> None:
        self._flushing = False
        self.counters.inc("messages_buffered", result.accepted)
        self.counters.inc("dropped", result.dropped_oldest + result.refused)
        if result.limit is not None:
            store = self.buffer.buffer
            limit = f"{result.limit}={getattr(store, result.limit, '?')}"
            self.drops.drop_all({"refused": result.refused, "oldest": result.dropped_oldest},
                                limit)
        self.counters.set("buffered", self.buffer.count())
        # refuse_newest refuses the last messages of the batch; drop_oldest
        # keeps the newest, so what it did not store is at the front.
        lost = len(batch) - result.accepted
        if self.buffer.buffer.policy == "refuse_newest":
            stored, refused = batch[:result.accepted], batch[result.accepted:]
        else:
            stored, refused = batch[lost:], batch[:lost]
        for pending in stored:
            # A message out of the window whose row lands behind the replay cursor
            # (nacked or spilled after the replay passed its place) is replayed
            # before anything newer is sent.
            replay = not pending.saving or pending.left == "requeued"
            if replay and pending.seq <= self._replay_cursor and self._link is not None:
                self._start_over()
            if pending.saving:
                self._saved(pending)
            if pending.deferred is not None:
                d, pending.deferred = pending.deferred, None
                d.callback(None)
        for pending in refused:
            if pending.saving:
                pending.saving = False
                if pending.left is None:
                    continue  # still in flight: the next check tries to save it again
            if pending.deferred is not None:
                d, pending.deferred = pending.deferred, None
                policy = self.buffer.buffer.policy
                d.errback(BufferFull(
                    f"publisher buffer is full ({result.limit}, policy {policy})", result.limit))
        if self._to_delete:
            self._schedule_delete()
        if self._to_buffer:
            self._flush()
        self._pump()

    def _saved(self, pending: _Pending) -> None:
        """The row of a message still in flight (or just out of it) is on disk."""
        pending.saving = False
        if pending.left == "acked":
            self._to_delete.append(pending.seq)
        elif pending.left is None:
            pending.buffered = True  # deleted on its ack, replayed if the link drops

    def _flush_failed(self, failure, batch: list[_Pending]) -> None:
        # The disk failed: keep the messages in memory and try again shortly,
        # rather than reporting as safe what is not.
        self._flushing = False
        self.log.failure("could not write {n} message(s) to the buffer; retrying", failure, n=len(batch))
        self.counters.inc("errors")
        retry = []
        for pending in batch:
            if pending.saving and pending.left is not None:
                acked, pending.saving, pending.left = pending.left == "acked", False, None
                if acked:
                    continue  # confirmed meanwhile: nothing left to keep
                # Out of the window: now a plain message on its way to disk.
            retry.append(pending)
        self._to_buffer = sorted(retry + self._to_buffer, key=lambda p: p.seq)
        self.clock.callLater(1.0, self._retry_flush)

    def _retry_flush(self) -> None:
        if not self._flushing:
            self._flush()

    def _pump(self) -> None:
        """Replay buffered rows while the link is usable and there is room."""
        if not self.usable or self._reading or self._stopped:
            return
        if self._probing and (self._in_flight or self._probe_delayed()):
            return  # one message at a time, after a delay, until the broker acks one
        if self._rewind:
            if any(p.buffered for p in self._in_flight.values()):
                return  # wait until the replayed window is settled
            self._rewind = False
            self._replay_cursor = 0
        room = self.max_in_flight - len(self._in_flight)
        if room < min(self.batch_size, self.max_in_flight) // 2 or not self.buffer.count():
            return
        self._reading = True
        d = self.buffer.read(after_id=self._replay_cursor, limit=min(room, self.batch_size))
        d.addCallback(self._replay, self._epoch)
        d.addErrback(self._replay_failed)

    def _delay_probe(self) -> None:
        """No probe before the current delay; the next refusal waits twice as long.

        Nacks of a window sent before the first one arrive while the delay runs:
        they neither extend nor double it.
        """
        if self._probe_delayed():
            return
        delay = self._nack_delay
        self._nack_delay = min(delay * 2, self.nack_backoff_max)
        self._probe_call = self.clock.callLater(delay, self._probe_due)

    def _probe_delayed(self) -> bool:
        return self._probe_call is not None and self._probe_call.active()

    def _probe_due(self) -> None:
        self._probe_call = None
        self._pump()

    def _cancel_probe_delay(self) -> None:
        if self._probe_delayed():
            self._probe_call.cancel()
        self._probe_call = None

    def _replay(self, rows, epoch: int) -> None:
        self._reading = False
        if epoch != self._epoch:
            # Read for an earlier link or before the replay had to start over.
            self._pump()
            return
        if not self.usable:
            return
        if self._probing and (self._in_flight or self._probe_delayed()):
            return  # a nack came while reading: these rows are read again for the probe
        # Rows of messages still in flight (saved while the broker was blocked)
        # await their confirm, and confirmed rows await their delete: sending
        # them again would deliver them twice.
        flying = {p.seq for p in self._in_flight.values() if p.buffered or p.saving}
        flying.update(self._to_delete, self._deleting_ids)
        handled = 0
        for row_id, record in rows:
            if row_id in flying:
                self._replay_cursor = row_id
                handled += 1
                continue
            if not self._send(_Pending(row_id, record, None, buffered=True)):
                return
            self._replay_cursor = row_id
            handled += 1
            if self._probing:
                break  # the rest is read again once this one is acked
        if rows:
            self.counters.inc("replayed", handled)
            self._pump()

    def _replay_failed(self, failure) -> None:
        self._reading = False
        self.log.failure("could not read the buffer", failure)
        self.counters.inc("errors")

    def _schedule_delete(self) -> None:
        if len(self._to_delete) >= self.batch_size:
            self._delete_acked()
        elif self._delete_call is None or not self._delete_call.active():
            self._delete_call = self.clock.callLater(0.05, self._delete_acked)

    def _delete_acked(self) -> None:
        if self._deleting or not self._to_delete:
            return
        ids, self._to_delete = self._to_delete, []
        self._deleting = True
        self._deleting_ids = ids
        d = self.buffer.delete(ids)
        d.addCallback(self._deleted)
        d.addErrback(self._delete_failed, ids)

    def _deleted(self, _count) -> None:
        self._deleting = False
        self._deleting_ids = []
        self.counters.set("buffered", self.buffer.count())
        if self._to_delete:
            self._schedule_delete()
        self._pump()

    def _delete_failed(self, failure, ids) -> None:
        # The rows stay: they will be sent again (a duplicate, never a loss).
        self._deleting = False
        self._deleting_ids = []
        self.log.failure("could not delete {n} confirmed row(s) from the buffer", failure, n=len(ids))
        self.counters.inc("errors")

    def _check_confirms(self) -> None:
        """A broker that takes messages and never confirms them is down too."""
        if self._link is None or not self._in_flight:
            return
        oldest = next(iter(self._in_flight.values()))
        age = self.clock.seconds() - oldest.sent_at
        if age > self.confirm_timeout and self._blocked:
            self._save_in_flight()
        elif age > self.confirm_timeout:
            self.log.warn(
                "no publisher confirm for {age:.1f}s: dropping the connection", age=age)
            self.counters.inc("confirm_timeouts")
            link = self._link
            self.link_down("confirm timeout")
            link.abort("confirm timeout")

    def _save_in_flight(self) -> None:
        """Write the unconfirmed messages to the buffer, keeping them in flight.

        A blocked broker confirms what it has read once the alarm ends: the
        connection is kept, and each row is deleted on its message's ack. Its
        durable callers are told once the rows are on disk.
        """
        entries = [e for e in self._in_flight.values() if not e.buffered and not e.saving]
        if not entries:
            return
        for e in entries:
            e.saving = True
        self.log.warn("no publisher confirm while blocked: {n} message(s) in flight saved "
                      "to the buffer", n=len(entries))
        self.counters.inc("saved_in_flight", len(entries))
        self._to_buffer = sorted(self._to_buffer + entries, key=lambda p: p.seq)
        if not self._flushing:
            self._flush()


def _held(pending: _Pending) -> None:
    """Sent, in the in-flight window: tell a caller who does not wait for durability."""
    if not pending.durable and pending.deferred is not None:
        d, pending.deferred = pending.deferred, None
        d.callback(None)


def _sleep(clock: IReactorTime, seconds: float) -> defer.Deferred:
    return task.deferLater(clock, seconds, lambda: None)
