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


def connector_queue(prefix: str, connector: str, queue_type: str = "classic") -> QueueSpec:
    """The queue a consuming connector reads: ``<prefix>.<connector>``."""
    consumes = consumers()
    if connector not in consumes:
        raise KeyError(f"connector {connector!r} consumes nothing (known: {', '.join(consumes)})")
    arguments = {"x-dead-letter-exchange": dead_letter_exchange(prefix)}
    if queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
    return QueueSpec(
        name=f"{prefix}.{connector}",
        bindings=tuple(Binding(f"{prefix}.{t}") for t in consumes[connector]),
        arguments=arguments,
    )


def dead_letter_queue(prefix: str) -> QueueSpec:
    """The queue that keeps dead letters for an operator to look at."""
    return QueueSpec(name=f"{prefix}.dead", bindings=(Binding(dead_letter_exchange(prefix)),))


def status_queue(prefix: str) -> QueueSpec:
    """Recent heartbeats, read (and left in place) by ``centaure status``."""
    return QueueSpec(
        name=f"{prefix}.status",
        bindings=(Binding(f"{prefix}.status"),),
        arguments={"x-message-ttl": STATUS_TTL_MS, "x-max-length": STATUS_MAX_LENGTH},
    )


def all_queues(prefix: str, queue_type: str = "classic") -> list[QueueSpec]:
    """Every queue ``bus-config`` declares."""
    queues = [connector_queue(prefix, c, queue_type) for c in consumers()]
    return queues + [dead_letter_queue(prefix), status_queue(prefix)]


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
