"""What exists on the bus: exchanges, queues, bindings, dead-letter routes.

One topic exchange per message type (``<prefix>.<type>``, routing key
``<type>.<host>``), one durable queue per consuming connector, and a
dead-letter exchange and queue (``<prefix>.dead``). ``centaure bus-config``,
the AMQP subscriber and the embedded bus all read this one description.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from connector.messages import MESSAGE_TYPES



def consumers() -> dict[str, tuple[str, ...]]:
    """Connector name -> the message types its queue receives, for every installed consumer.

    Each connector declares what it consumes (:mod:`connector.registry`).
    """
    from connector.registry import installed

    return {name: spec.consumes for name, spec in installed().items() if spec.consumes}

STATUS_TTL_MS = 15 * 60 * 1000
STATUS_MAX_LENGTH = 10_000

#: Deliveries after which a quorum queue dead-letters a message by itself.
#: The consumer dead-letters a failing message after ``[bus] retry_limit``
#: requeues, with the reason; every requeue, and every unacked message handed
#: back when a connection drops, counts as a delivery here too. This limit is
#: the safety net for what the consumer never gets to judge (a message that
#: kills the process each time it is handled), so it is well above the highest
#: ``retry_limit`` allowed with quorum queues (:data:`QUORUM_MAX_RETRY_LIMIT`).
DELIVERY_LIMIT = 100
#: Highest ``[bus] retry_limit`` with quorum queues: the other half of
#: :data:`DELIVERY_LIMIT` is left for redeliveries after lost connections.
QUORUM_MAX_RETRY_LIMIT = DELIVERY_LIMIT // 2

# Arguments every quorum queue gets. RabbitMQ 3.10 accepts 'client-local' and
# 'balanced' for x-queue-leader-locator; 'balanced' puts each new queue's
# leader on the node with the fewest leaders, so the load spreads over the
# cluster instead of landing on whichever node bus-config connected to.
_QUORUM = {"x-queue-type": "quorum", "x-queue-leader-locator": "balanced"}


@dataclass(frozen=True)
class Binding:
    """Messages published to ``exchange`` whose key matches ``pattern``."""

    exchange: str
    pattern: str = "#"


@dataclass(frozen=True)
class QueueSpec:
    """A durable queue, its arguments and what feeds it."""

    name: str
    bindings: tuple[Binding, ...]
    arguments: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def message_types(self) -> tuple[str, ...]:
        """The message types this queue receives (from its exchanges' names)."""
        return tuple(b.exchange.rsplit(".", 1)[-1] for b in self.bindings)


def exchange_names(prefix: str) -> tuple[str, ...]:
    """Every message exchange (not the dead-letter one)."""
    return tuple(f"{prefix}.{t}" for t in MESSAGE_TYPES)


def dead_letter_exchange(prefix: str) -> str:
    """Where what a consumer could not use goes."""
    return f"{prefix}.dead"


def published_exchanges(prefix: str, process: str) -> tuple[str, ...]:
    """The exchanges a process's connection declares on connecting.

    A connector's own process declares only the exchanges it publishes to,
    ``status`` and the dead-letter exchange, so its broker user needs no right
    on the others (:mod:`connector.permissions`); any other process
    (``centaure-all``, tools) declares them all.
    """
    from connector.registry import installed

    spec = installed().get(process)
    if spec is None:
        return exchange_names(prefix) + (dead_letter_exchange(prefix),)
    return tuple(f"{prefix}.{t}" for t in (*spec.publishes, "status")) + (
        dead_letter_exchange(prefix),)


#: Age and length above which a bounded queue (``ConnectorSpec.bounded_queue``) drops
#: its oldest messages.
BOUNDED_TTL_MS = 10 * 60 * 1000
BOUNDED_MAX_LENGTH = 100_000


def connector_queue(prefix: str, connector: str, queue_type: str = "classic") -> QueueSpec:
    """The queue a consuming connector reads: ``<prefix>.<connector>``."""
    from connector.registry import installed

    consumes = consumers()
    if connector not in consumes:
        raise KeyError(f"connector {connector!r} consumes nothing (known: {', '.join(consumes)})")
    bindings = tuple(Binding(f"{prefix}.{t}") for t in consumes[connector])
    if installed()[connector].bounded_queue:
        # No dead-letter exchange: what expires or overflows is stale, not lost work.
        arguments = {"x-message-ttl": BOUNDED_TTL_MS, "x-max-length": BOUNDED_MAX_LENGTH,
                     "x-overflow": "drop-head"}
        if queue_type == "quorum":
            arguments.update(_QUORUM)
        return QueueSpec(name=f"{prefix}.{connector}", bindings=bindings, arguments=arguments)
    arguments: dict = {"x-dead-letter-exchange": dead_letter_exchange(prefix)}
    if queue_type == "quorum":
        arguments.update(_QUORUM)
        arguments.update({
            # What the broker dead-letters itself (past the delivery limit) is
            # kept until <prefix>.dead confirms it, instead of being dropped
            # when that queue's node is down (at-most-once, the default).
            "x-dead-letter-strategy": "at-least-once",
            # at-least-once dead-lettering requires reject-publish; with no
            # x-max-length the queue never refuses a message because of it.
            "x-overflow": "reject-publish",
            "x-delivery-limit": DELIVERY_LIMIT,
        })
    return QueueSpec(name=f"{prefix}.{connector}", bindings=bindings, arguments=arguments)


def dead_letter_queue(prefix: str, queue_type: str = "classic") -> QueueSpec:
    """The queue that keeps dead letters for an operator to look at (unbounded)."""
    return QueueSpec(name=f"{prefix}.dead", bindings=(Binding(dead_letter_exchange(prefix)),),
                     arguments=dict(_QUORUM) if queue_type == "quorum" else {})


def status_queue(prefix: str, queue_type: str = "classic") -> QueueSpec:
    """Recent heartbeats, read (and left in place) by ``centaure status``.

    Bounded by age and length. As a quorum queue (RabbitMQ 3.10 supports
    message TTL and drop-head for them) it survives the loss of a node, and
    drop-head removes the oldest heartbeats when it is full; it has no delivery
    limit, since every ``centaure status`` hands every heartbeat back.
    """
    arguments: dict = {"x-message-ttl": STATUS_TTL_MS, "x-max-length": STATUS_MAX_LENGTH}
    if queue_type == "quorum":
        arguments.update(_QUORUM)
        arguments["x-overflow"] = "drop-head"
    return QueueSpec(name=f"{prefix}.status", bindings=(Binding(f"{prefix}.status"),),
                     arguments=arguments)


#: Connectors whose hosts are shared over partitions when ``[bus] partitions``
#: is set: each partition has its own queue, read by the node owning it. The
#: other consuming connectors (the SQL writer) share one queue.
PARTITIONED = ("correlator", "alerter")
#: The message types a partitioned connector reads by partition, when not all
#: it consumes: the alerter evaluates ``perf`` per host, while its notifier
#: reads every ``alarm`` from a queue of its own (grouping spans hosts).
PARTITIONED_TYPES = {"alerter": ("perf",)}


def partition_queue(prefix: str, connector: str, partition: int,
                    queue_type: str = "quorum") -> QueueSpec:
    """Partition ``partition``'s queue of ``connector``: ``<prefix>.<connector>.p<N>``.

    It receives the messages whose routing key carries that partition
    (``<type>.<partition>.<host>``); partition 0 also receives the host-less
    ``alarm_command`` and ``notification`` messages, so that none is dropped
    unrouted. Single active consumer: even two nodes that both believed they
    owned the partition would not both receive its messages.
    """
    base = connector_queue(prefix, connector, queue_type)
    types = PARTITIONED_TYPES.get(connector, base.message_types)
    bindings = [Binding(b.exchange, f"{t}.{partition}.#")
                for b, t in zip(base.bindings, base.message_types) if t in types]
    if partition == 0:
        bindings += [Binding(b.exchange, f"{t}._") for b, t in zip(base.bindings, base.message_types)
                     if t in ("alarm_command", "notification") and t in types]
    arguments = dict(base.arguments)
    arguments["x-single-active-consumer"] = True
    return QueueSpec(name=f"{base.name}.p{partition}", bindings=tuple(bindings),
                     arguments=arguments)


def token_exchange(prefix: str) -> str:
    """The exchange ownership tokens are put back through (direct, by queue name)."""
    return f"{prefix}.token"


def token_queue(prefix: str, role: str, partition: int) -> QueueSpec:
    """The queue holding the one ownership token of ``role``'s ``partition``.

    Always a quorum queue (a token must survive the loss of a broker node),
    with a single active consumer (the owner) and no delivery limit: the
    owner hands the token back to itself regularly, each time a delivery.
    """
    name = f"{prefix}.token.{role}.{partition}"
    return QueueSpec(name=name, bindings=(Binding(token_exchange(prefix), name),),
                     arguments={**_QUORUM, "x-single-active-consumer": True})


def members_queue(prefix: str, role: str) -> QueueSpec:
    """An always empty queue every live node of ``role`` consumes.

    The broker's count of its consumers is the number of live nodes of the
    role (a token queue's count would not do: with a single active consumer
    RabbitMQ counts only the active one).
    """
    name = f"{prefix}.members.{role}"
    return QueueSpec(name=name, bindings=(), arguments=dict(_QUORUM))


def peers_queue(prefix: str, role: str, node: str, pid: int) -> QueueSpec:
    """The heartbeats one process of ``role`` reads to know its peers (exclusive, its own)."""
    return QueueSpec(name=f"{prefix}.peers.{role}.{node}.{pid}",
                     bindings=(Binding(f"{prefix}.status", "status.#"),),
                     arguments={"x-message-ttl": STATUS_TTL_MS})


def all_queues(prefix: str, queue_type: str = "classic", partitions: int = 0) -> list[QueueSpec]:
    """Every queue ``bus-config`` declares.

    With ``partitions``, the partitioned connectors' queues are their
    partition queues (always quorum), and every role's token queues follow.
    """
    queues = []
    for c in consumers():
        if partitions and c in PARTITIONED:
            queues += [partition_queue(prefix, c, p) for p in range(partitions)]
        else:
            queues.append(connector_queue(prefix, c, queue_type))
    return queues + [dead_letter_queue(prefix, queue_type), status_queue(prefix, queue_type)]


def _match_words(pattern: tuple[str, ...], key: tuple[str, ...]) -> bool:
    # AMQP topic patterns: '*' is exactly one word, '#' zero or more words.
    if not pattern:
        return not key
    head = pattern[0]
    if head == "#":
        return any(_match_words(pattern[1:], key[i:]) for i in range(len(key) + 1))
    if not key:
        return False
    return (head == "*" or head == key[0]) and _match_words(pattern[1:], key[1:])


def topic_matches(pattern: str, routing_key: str) -> bool:
    """True when ``routing_key`` matches the AMQP topic ``pattern``."""
    if pattern == "#":
        return True
    return _match_words(tuple(pattern.split(".")), tuple(routing_key.split(".")))
