"""What happens to each message a connector takes from its queue.

The body is decoded and validated; a body that does not parse goes straight
to the dead-letter exchange with the reason in a header. A valid message is
given to the connector's handler and acked only once the handler's Deferred
succeeds. When the handler fails, the message is put back on the queue after
a growing delay, at most ``retry_limit`` times, then dead-lettered; when it
fails with :class:`RejectedMessage` (the message itself can never be
processed), it is dead-lettered at once with that reason.

Invalid and rejected messages are told in the log by a :class:`DeadLetterLog`,
one line at most every 10 s (the first at once) with the counts by reason
and the first message of each reason since the previous line; the counters
``invalid`` and ``rejected`` count every one. A flood of malformed messages
is thus a handful of lines, not one per message.

A dead letter must be held by the publisher (``durable=True``) before its
original is acked. When the publisher refuses it (its buffer full with the
``refuse_newest`` policy, or closed), the original is put back on its queue
(``requeue``) after a delay, so nothing is lost and nothing spins: the delay
starts at ``max(retry_delay, 1 s)`` and grows with the time dead-lettering
has been failing (about doubling at each round, at most 60 s); the message
holds its place in the prefetch window meanwhile, which slows the consumer
down while its dead letters cannot go anywhere. Each failure is counted
(``dead_letter_failed_<reason>``) and told by the same kind of rate-limited
line. On a quorum queue a message put back this way more than
``x-delivery-limit`` times is dead-lettered by the broker itself.

The transport (AMQP or the embedded bus) supplies the ``ack`` and ``requeue``
callables; this module never sees a channel.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from connector import messages
from connector.buffer import BufferFull
from connector.droplog import DEFAULT_INTERVAL, DropLog
from connector.metrics import Counters

REASON_HEADER = "x-centaure-reason"
QUEUE_HEADER = "x-centaure-queue"
EXCHANGE_HEADER = "x-centaure-original-exchange"
ROUTING_KEY_HEADER = "x-centaure-original-routing-key"

_MAX_REASON = 1000
_MAX_TRACKED = 100_000
# Longest text of one message told in a dead-letter log line.
_MAX_EXAMPLE = 300
#: Longest wait before a message whose dead letter was refused is put back on its queue.
MAX_PUT_BACK_DELAY = 60.0


class RejectedMessage(Exception):
    """Raised (or failed with) by a handler for a message it can never process.

    ``str()`` is the reason written in the dead letter's header; ``kind`` names
    the reason in the dead-letter log line and its counter.
    """

    kind = "rejected"


def _printable(text: str) -> str:
    """``text`` cut short and made one log line (a routing key or error may hold anything)."""
    if len(text) > _MAX_EXAMPLE:
        text = text[:_MAX_EXAMPLE] + "..."
    return "".join(c if c.isprintable() else "?" for c in text)


class DeadLetterLog:
    """Dead letters and dead letters that failed, told one line every ``interval`` s at most.

    Shared by the consumers of one bus: a flood spread over many queues is
    still one line per interval. ``dead_lettered`` counts by reason in the
    counters ``invalid`` and ``rejected``; ``failed`` in
    ``dead_letter_failed_<reason>`` (``buffer_full``, ``error``).
    """

    def __init__(self, clock: IReactorTime, counters: Counters, log: Logger | None = None,
                 interval: float = DEFAULT_INTERVAL) -> None:
        log = log if log is not None else Logger(namespace="connector.consumer")
        self.dead_lettered = DropLog(clock, counters, log, interval,
                                     subject="messages dead-lettered", counter_prefix="")
        self.failed = DropLog(
            clock, counters, log, interval, counter_prefix="dead_letter_failed_",
            subject="messages not dead-lettered (the publisher refused the dead letter) and "
                    "put back on their queue after a delay")

    def stop(self) -> None:
        """Tell what was not told yet."""
        self.dead_lettered.stop()
        self.failed.stop()


@dataclass(slots=True)
class Delivery:
    """One message as taken from a queue, with its AMQP metadata.

    ``user_id``: the AMQP ``user-id`` property, which RabbitMQ checks against
    the publishing connection's user (None when absent, and on the embedded bus).
    """

    body: bytes
    exchange: str
    routing_key: str
    message_id: str | None = None
    msg_type: str | None = None
    redelivered: bool = False
    headers: dict = field(default_factory=dict)
    tag: int = 0
    user_id: str | None = None


class Consumer:
    """Decodes, calls the handler, then acks, retries or dead-letters."""

    log = Logger()

    def __init__(
        self,
        queue: str,
        handler,
        publisher,
        dead_letter_exchange: str,
        counters: Counters,
        clock,
        retry_limit: int = 5,
        retry_delay: float = 1.0,
        dead_letters: DeadLetterLog | None = None,
    ) -> None:
        self.queue = queue
        self.handler = handler
        self.publisher = publisher
        self.dead_letter_exchange = dead_letter_exchange
        self.counters = counters
        self.clock = clock
        self.retry_limit = retry_limit
        self.retry_delay = retry_delay
        #: Where invalid and rejected messages are told (the bus's, shared by its consumers).
        self.dead_letters = dead_letters or DeadLetterLog(clock, counters, self.log)
        # Failures per message id; bounded so a flood of bad ids cannot grow it.
        self._failures: OrderedDict[str, int] = OrderedDict()
        # Since when dead letters have been refused (None: the last one was held).
        self._failing_since: float | None = None

    def deliver(self, delivery: Delivery, ack: Callable[[], None],
                requeue: Callable[[], None]) -> defer.Deferred:
        """Process one delivery; fires when it has been acked or requeued."""
        self.counters.inc("received")
        try:
            message = messages.decode(delivery.body)
        except messages.MessageError as e:
            self.dead_letters.dead_lettered.drop("invalid", example=self._example(delivery, e))
            return self._dead_letter(delivery, f"invalid message: {e}", ack, requeue)
        d = defer.maybeDeferred(self.handler.handle, message, delivery)
        d.addCallbacks(self._handled, self._failed,
                       callbackArgs=(delivery, ack), errbackArgs=(delivery, ack, requeue))
        return d

    def _handled(self, _result, delivery: Delivery, ack) -> None:
        if delivery.message_id:
            self._failures.pop(delivery.message_id, None)
        self.counters.inc("handled")
        ack()

    def _failed(self, failure, delivery: Delivery, ack, requeue):
        key = delivery.message_id or f"tag:{delivery.tag}"
        self.counters.inc("handler_errors")
        if failure.check(RejectedMessage):
            self._failures.pop(key, None)
            self.dead_letters.dead_lettered.drop(
                failure.value.kind, example=self._example(delivery, failure.getErrorMessage()))
            return self._dead_letter(delivery, f"rejected: {failure.getErrorMessage()}", ack,
                                     requeue)
        attempts = self._failures.pop(key, 0) + 1
        if attempts > self.retry_limit:
            self.log.failure("handler failed {n} times on {key}: dead-lettering it", failure,
                             n=attempts, key=delivery.routing_key)
            reason = f"handler failed {attempts} times: {failure.getErrorMessage()}"

            def keep_count() -> None:
                # Back on its queue with its count: its next failure dead-letters it.
                self._track(key, attempts - 1)

            return self._dead_letter(delivery, reason, ack, requeue, keep_count)
        self._track(key, attempts)
        delay = min(self.retry_delay * 2 ** (attempts - 1), 60.0)
        self.log.warn("handler failed on {key} (attempt {n}/{limit}): {error}; retrying in {delay}s",
                      key=delivery.routing_key, n=attempts, limit=self.retry_limit,
                      error=failure.getErrorMessage(), delay=delay)
        self.counters.inc("retried")
        d = defer.Deferred()
        self.clock.callLater(delay, lambda: (requeue(), d.callback(None)))
        return d

    def _track(self, key: str, attempts: int) -> None:
        self._failures[key] = attempts
        while len(self._failures) > _MAX_TRACKED:
            self._failures.popitem(last=False)

    def _example(self, delivery: Delivery, reason) -> str:
        return _printable(f"{reason} (queue {self.queue}, routing key {delivery.routing_key!r}, "
                          f"message id {delivery.message_id!r})")

    def _dead_letter(self, delivery: Delivery, reason: str, ack, requeue,
                     on_failure: Callable[[], None] | None = None) -> defer.Deferred:
        headers = {
            REASON_HEADER: reason[:_MAX_REASON],
            QUEUE_HEADER: self.queue,
            EXCHANGE_HEADER: delivery.exchange,
            ROUTING_KEY_HEADER: delivery.routing_key,
        }
        d = defer.maybeDeferred(
            self.publisher.publish_raw,
            self.dead_letter_exchange,
            self.queue,
            delivery.body,
            {"message_id": delivery.message_id, "type": delivery.msg_type or "", "headers": headers},
            durable=True,
        )

        def _done(_):
            self._failing_since = None
            self.counters.inc("dead_lettered")
            ack()

        def _refused(failure):
            # The original is the only copy left: it goes back to its queue, later
            # (now would only spin on a publisher that refuses for a while yet).
            if on_failure is not None:
                on_failure()
            delay = self._put_back_delay()
            why = "buffer_full" if failure.check(BufferFull) else "error"
            error = failure.getErrorMessage() or failure.type.__name__
            self.dead_letters.failed.drop(why, example=self._example(
                delivery, f"{error}; back on its queue in {delay:.0f} s"))
            back = defer.Deferred()
            self.clock.callLater(delay, lambda: (requeue(), back.callback(None)))
            return back

        # Acked only once the dead letter is held durably by the publisher.
        d.addCallbacks(_done, _refused)
        return d

    def _put_back_delay(self) -> float:
        """Seconds before a message whose dead letter was refused goes back to its queue."""
        now = self.clock.seconds()
        if self._failing_since is None:
            self._failing_since = now
        # Each round waits about as long as all the rounds before it: the delay doubles.
        base = max(self.retry_delay, 1.0)
        return min(base + (now - self._failing_since), MAX_PUT_BACK_DELAY)
