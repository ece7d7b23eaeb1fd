"""The seams of the core, as ``zope.interface`` interfaces.

Connectors depend on these and never on txamqp, SQLite or a particular bus:
the AMQP adapter and the embedded bus both provide them, and a sharded or
replicated implementation can stand behind the same names.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IPublisher(Interface):
    """Publishes messages on the bus without ever losing an accepted one."""

    def publish(message, headers=None, durable=False, message_id=None):
        """
        Publish one message (a ``connector.messages`` struct), under
        ``message_id`` when given (a deterministic id consumers deduplicate
        on), else under a new unique id.

        Returns a Deferred that fires with ``None`` once the publisher holds
        the message, never later because the broker is blocked, hung or slow
        to confirm: sent and kept in memory until confirmed (within the
        in-flight window; gone if this process is killed before the broker
        got it), or committed to the on-disk buffer from which it will be
        replayed. With ``durable=True`` it fires once the message survives a
        kill -9 of this process: confirmed by the broker or committed to the
        buffer (at most about ``[bus] confirm_timeout`` after it was sent);
        for callers that drop their own copy once told (outboxes, acks).
        It fails with ``BufferFull`` when the buffer is full and its policy is
        ``refuse_newest``.
        """

    def publish_raw(exchange, routing_key, body, properties, durable=False):
        """
        Publish an already encoded body (dead letters, replays, tools) with
        the same guarantees as ``publish``.
        """


class IMessageHandler(Interface):
    """Does a connector's work for one message taken from a queue."""

    def handle(message, delivery):
        """
        Process ``message`` (a decoded struct); ``delivery`` carries the AMQP
        metadata (routing key, message id, redelivered flag, headers).

        Returns a Deferred (or None): the message is acked only after it
        succeeds, retried then dead-lettered after it fails.
        """


class ISubscriber(Interface):
    """Consumes one queue and feeds a handler, acking after its work."""

    def subscribe(queue, handler):
        """
        Consume ``queue`` (a ``connector.topology.QueueSpec``) with
        ``handler`` (an ``IMessageHandler``) from now on, across reconnections.
        """


class IBus(Interface):
    """A connection to the bus that hands out publishers and subscribers."""

    connected = Attribute("True while messages can flow to and from the bus.")

    def publisher(app_id):
        """Return the ``IPublisher`` a connector named ``app_id`` publishes with."""

    def subscriber(app_id):
        """Return an ``ISubscriber`` for the connector named ``app_id``."""

    def health():
        """Return a dict: ``connected``, ``blocked``, ``degraded`` and details."""


class IMembership(Interface):
    """Answers which hosts this node is in charge of, per connector (all of them by default)."""

    def owns(connector, host):
        """Return True when this node is in charge of ``host`` for ``connector``."""


class IOwnership(IMembership):
    """Which partitions of a role this node owns, decided by the broker."""

    partitions = Attribute("How many partitions the hosts are shared over.")
    owned = Attribute("frozenset of the partitions owned here now.")

    def add_listener(listener):
        """Tell ``listener`` (an ``IOwnershipListener``) about every change from now on."""


class IOwnershipListener(Interface):
    """What a service does when partitions of its role come and go."""

    def gained(partitions):
        """``partitions`` (a frozenset) are owned here now; may return a Deferred."""

    def releasing(partitions):
        """``partitions`` are about to be handed on: finish with them; may return a Deferred."""

    def lost(partitions):
        """``partitions`` are no longer owned here (handed on, or the connection dropped)."""


class IStore(Interface):
    """One table layout of the SQL writer: messages to rows, batches to SQL."""

    def prepare(message, delivery):
        """
        Turn one message into what ``write`` needs (reactor thread, no I/O).

        Returns an object with an ``nrows`` attribute (rows it will write),
        or None for a message type this store keeps nothing of. Raises
        ``connector.consumer.RejectedMessage`` (with the reason) for a
        message no column can hold.
        """

    def write(prepared):
        """
        Write a list of ``prepare`` results in ONE transaction (writer thread).

        Returns a dict: table name -> rows written. Idempotent: writing the
        same messages again adds no row. Raises SQLAlchemy's errors as they
        come (the writer tells an outage from a bad row).
        """

    def health():
        """Return a dict of details for /health (may be empty)."""


class IBatchStore(Interface):
    """The connector-specific steps of a batch that a ``BatchCommitter`` runs.

    The committer queues items, takes them in batches and calls, for each
    batch: ``apply`` (reactor thread, as soon as the batch is taken; it may
    overlap the previous batch's commit), ``snapshot`` (reactor thread, once
    the previous commit has ended), ``commit`` (worker thread, retried while
    the database is away), then ``committed`` (reactor thread) before the
    batch's items are acked. ``failed`` is called instead once the batch
    will not be committed.
    """

    def apply(values):
        """
        Work the batch's queued values (a list, possibly empty for a forced
        batch) in memory; returns what ``snapshot`` and ``committed`` are given.
        """

    def snapshot(applied):
        """
        What ``commit`` writes, taken at the batch's turn to commit; None when
        there is nothing to write (no transaction is run).
        """

    def commit(work):
        """
        Write ``work`` in ONE transaction (worker thread); returns a result
        for ``committed``. Raises the database's errors as they come.
        """

    def committed(applied, result):
        """
        The batch is committed (``result`` is None when ``snapshot`` gave
        nothing to write): publish what it produced. Returns, or a Deferred
        fires with, None or one outcome per value: an exception fails that
        value's Deferred, anything else is what it fires with.
        """

    def failed(applied, work, failure):
        """
        The batch is not committed and will not be retried: undo or keep
        back what ``apply`` and ``snapshot`` took (either may be None).
        """

    def outage(error, attempt, delay, size):
        """
        The commit of ``size`` values failed because the database is away;
        retry ``attempt`` follows in ``delay`` seconds (log it, count it).
        """

    def recovered(attempts):
        """A commit succeeded after ``attempts`` outage retries."""
