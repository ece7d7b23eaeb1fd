"""What happens to each message a connector takes from its queue.

The body is decoded and validated; a body that does not parse goes straight
to the dead-letter exchange with the reason in a header. A valid message is
given to the connector's handler and acked only once the handler's Deferred
succeeds. When the handler fails, the message is put back on the queue after
a growing delay, at most ``retry_limit`` times, then dead-lettered; when it
fails with :class:`RejectedMessage` (the message itself can never be
processed), it is dead-lettered at once with that reason.

The transport (AMQP or the embedded bus) supplies the ``ack`` and ``requeue``
callables; this module never sees a channel.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from twisted.internet import defer
from twisted.logger import Logger

from connector import messages
from connector.metrics import Counters

REASON_HEADER = "x-centaure-reason"
QUEUE_HEADER = "x-centaure-queue"
EXCHANGE_HEADER = "x-centaure-original-exchange"
ROUTING_KEY_HEADER = "x-centaure-original-routing-key"

_MAX_REASON = 1000
_MAX_TRACKED = 100_000


class RejectedMessage(Exception):
    """Raised (or failed with) by a handler for a message it can never process.

    ``str()`` is the reason written in the dead letter's header.
    """


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
    ) -> None:
        self.queue = queue
        self.handler = handler
        self.publisher = publisher
        self.dead_letter_exchange = dead_letter_exchange
        self.counters = counters
        self.clock = clock
        self.retry_limit = retry_limit
        self.retry_delay = retry_delay
        # Failures per message id; bounded so a flood of bad ids cannot grow it.
        self._failures: OrderedDict[str, int] = OrderedDict()

    def deliver(self, delivery: Delivery, ack: Callable[[], None],
                requeue: Callable[[], None]) -> defer.Deferred:
        """Process one delivery; fires when it has been acked or requeued."""
        self.counters.inc("received")
        try:
            message = messages.decode(delivery.body)
        except messages.MessageError as e:
            self.counters.inc("invalid")
            self.log.warn("dead-lettering an invalid message from {queue} ({key}): {reason}",
                          queue=self.queue, key=delivery.routing_key, reason=str(e))
            return self._dead_letter(delivery, f"invalid message: {e}", ack)
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
            self.counters.inc("rejected")
            self.log.warn("dead-lettering a message the handler rejected ({key}): {reason}",
                          key=delivery.routing_key, reason=failure.getErrorMessage())
            return self._dead_letter(delivery, f"rejected: {failure.getErrorMessage()}", ack)
        attempts = self._failures.pop(key, 0) + 1
        if attempts > self.retry_limit:
            self.log.failure("handler failed {n} times on {key}: dead-lettering it", failure,
                             n=attempts, key=delivery.routing_key)
            reason = f"handler failed {attempts} times: {failure.getErrorMessage()}"
            return self._dead_letter(delivery, reason, ack)
        self._failures[key] = attempts
        while len(self._failures) > _MAX_TRACKED:
            self._failures.popitem(last=False)
        delay = min(self.retry_delay * 2 ** (attempts - 1), 60.0)
        self.log.warn("handler failed on {key} (attempt {n}/{limit}): {error}; retrying in {delay}s",
                      key=delivery.routing_key, n=attempts, limit=self.retry_limit,
                      error=failure.getErrorMessage(), delay=delay)
        self.counters.inc("retried")
        d = defer.Deferred()
        self.clock.callLater(delay, lambda: (requeue(), d.callback(None)))
        return d

    def _dead_letter(self, delivery: Delivery, reason: str, ack) -> defer.Deferred:
        headers = {
            REASON_HEADER: reason[:_MAX_REASON],
            QUEUE_HEADER: self.queue,
            EXCHANGE_HEADER: delivery.exchange,
            ROUTING_KEY_HEADER: delivery.routing_key,
        }
        d = self.publisher.publish_raw(
            self.dead_letter_exchange,
            self.queue,
            delivery.body,
            {"message_id": delivery.message_id, "type": delivery.msg_type or "", "headers": headers},
            durable=True,
        )

        def _done(_):
            self.counters.inc("dead_lettered")
            ack()

        # Acked only once the dead letter is safe: a failure leaves the
        # original unacked, and the broker redelivers it later.
        d.addCallback(_done)
        d.addErrback(lambda f: self.log.failure("could not dead-letter a message", f))
        return d
