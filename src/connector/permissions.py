"""Least-privilege RabbitMQ users: one per connector, from the topology and the registry.

:func:`definitions` builds a RabbitMQ definitions document (``rabbitmqctl
import_definitions``): the exchanges, queues and bindings ``bus-config``
declares, one user per connector (``<user_prefix>-<connector>``), one for
the ``centaure`` command (``<user_prefix>``) and one per operator or command
service named (the correlator's ``operators`` and ``command_services``), each
with permissions computed from what it publishes and consumes: only a
connector's own user may publish its message types (the ``event`` exchange
is the trap receiver's alone), and the command's and operators' users
publish nothing but ``alarm_command``. Users carry no password (the operator
sets them with ``rabbitmqctl change_password``) and no tags (no management UI).

RabbitMQ checks three regular expressions per user and vhost, matched
against exchange and queue names alike:

- configure: declaring (and deleting) a resource. A daemon declares on
  connecting the exchanges it publishes to and ``<prefix>.dead``, and a
  consumer its queue and the exchanges its queue is bound to.
- write: publishing to an exchange; binding needs write on the queue.
- read: consuming from a queue; binding needs read on the exchange.

``<prefix>.status`` and ``<prefix>.dead`` each name both an exchange and a
queue, so a right on one is a right on the other.

With ``[bus] partitions = P`` (several nodes) a connector that owns
partitions (:data:`ROLES`) also declares, consumes and binds its roles'
token queues ``<prefix>.token.<role>.<N>`` and members queue
``<prefix>.members.<role>``, and publishes tokens to the exchange
``<prefix>.token``; the correlator and the alerter read their partition
queues ``<prefix>.<connector>.p<N>`` instead of ``<prefix>.<connector>``,
and the alerter (holding the notifier's token) ``<prefix>.alerter.notifier``.
Those are matched by patterns (``[0-9]+``), not by P names each, so the
rights do not change with P.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from connector.registry import installed
from connector.topology import (PARTITIONED, all_queues, dead_letter_exchange, exchange_names,
                                members_queue, token_exchange)

#: The message type the ``centaure`` command publishes (``centaure alarms``).
CLI_PUBLISHES = ("alarm_command",)

#: Users a definitions file never defines: RabbitMQ's default user, whose
#: password an import would reset.
BUILTIN_USERS = ("guest",)

#: What never matches a name: RabbitMQ reads an empty regex as "nothing" too,
#: but the explicit form says so.
NOTHING = "^$"


#: The ownership roles (``connector.ownership``) each connector's process holds
#: tokens of with ``[bus] partitions``: the notifier runs in the alerter's.
ROLES: dict[str, tuple[str, ...]] = {
    "snmp": ("snmp",),
    "correlator": ("correlator",),
    "alerter": ("alerter", "notifier"),
}

#: Queues a role's holder reads besides the partition queues, declared by its
#: daemons (``connector_alerter.service.notifier_queue``): the notifier token's
#: holder reads every ``alarm`` from ``<prefix>.alerter.notifier``.
ROLE_QUEUES: dict[str, tuple[str, ...]] = {"notifier": ("alerter.notifier",)}


def names_regex(names: Iterable[str], patterns: Iterable[str] = ()) -> str:
    """A regex matching exactly ``names`` and ``patterns`` (an anchored alternation), or nothing.

    ``patterns`` are regexes already (unanchored: the alternation anchors them).
    """
    alternatives = [re.escape(n) for n in sorted(set(names))] + sorted(set(patterns))
    if not alternatives:
        return NOTHING
    return "^(" + "|".join(alternatives) + ")$"


def partition_queues_pattern(prefix: str, connector: str) -> str:
    """Every partition queue of ``connector``: ``<prefix>.<connector>.p<N>``, any N."""
    return re.escape(f"{prefix}.{connector}.p") + "[0-9]+"


def token_queues_pattern(prefix: str, role: str) -> str:
    """Every token queue of ``role``: ``<prefix>.token.<role>.<N>``, any N."""
    return re.escape(f"{prefix}.token.{role}.") + "[0-9]+"


def peers_queues_pattern(prefix: str, role: str) -> str:
    """Every process's heartbeat queue of ``role``: ``<prefix>.peers.<role>.<node>.<pid>``."""
    return re.escape(f"{prefix}.peers.{role}.") + r"[^ ]+"


def connector_rights(prefix: str, name: str, partitions: int = 0) -> dict[str, str]:
    """configure / write / read regexes of connector ``name``'s user.

    ``partitions``: ``[bus] partitions`` (0: one node, no token, no partition queue).
    """
    spec = installed()[name]
    published = [f"{prefix}.{t}" for t in (*spec.publishes, "status")]
    consumed = [f"{prefix}.{t}" for t in spec.consumes]
    queue = [f"{prefix}.{name}"] if spec.consumes else []
    queue_patterns: list[str] = []
    if partitions and name in PARTITIONED and spec.consumes:
        # Its partition queues replace its one queue.
        queue, queue_patterns = [], [partition_queues_pattern(prefix, name)]
    # A consumer dead-letters what it cannot use itself (connector.consumer).
    dead = [dead_letter_exchange(prefix)] if spec.consumes else []
    # Ownership tokens (connector.amqp.tokens): each role's token queues are
    # declared, bound to the token exchange (write on the queue, read on the
    # exchange) and consumed; tokens are published to that exchange; the
    # members queue is declared and consumed.
    roles = ROLES.get(name, ()) if partitions else ()
    # Each process also reads the heartbeats (its peers of the role) on an
    # exclusive queue of its own bound to the status exchange.
    tokens = [token_queues_pattern(prefix, r) for r in roles] + \
        [peers_queues_pattern(prefix, r) for r in roles]
    status = [f"{prefix}.status"] if roles else []
    members = [members_queue(prefix, r).name for r in roles]
    queue = queue + [f"{prefix}.{q}" for r in roles for q in ROLE_QUEUES.get(r, ())]
    exchange = [token_exchange(prefix)] if roles else []
    # The connection declares the exchanges it publishes to (and the dead-letter one).
    declared = published + [dead_letter_exchange(prefix)] + consumed + queue + members + exchange
    return {
        "configure": names_regex(declared, queue_patterns + tokens),
        "write": names_regex(published + dead + queue + exchange, queue_patterns + tokens),
        "read": names_regex(queue + consumed + members + exchange + status,
                            queue_patterns + tokens),
    }


def cli_rights(prefix: str) -> dict[str, str]:
    """Rights of the ``centaure`` command's user: publish commands, read heartbeats.

    ``centaure status`` declares and binds the status queue, then reads it;
    ``centaure alarms`` checks the correlator's queue exists (a passive
    declaration, which needs no right) and publishes to ``alarm_command``.
    """
    status = f"{prefix}.status"
    return {
        "configure": names_regex([status]),
        "write": names_regex([f"{prefix}.{t}" for t in CLI_PUBLISHES] + [status]),
        "read": names_regex([status]),
    }


def command_rights(prefix: str) -> dict[str, str]:
    """Rights of an operator's (or a command service's) user: publish ``alarm_command``, no more.

    ``centaure alarms`` checks the correlator's queue with a passive
    declaration, which needs no right.
    """
    return {
        "configure": NOTHING,
        "write": names_regex([f"{prefix}.{t}" for t in CLI_PUBLISHES]),
        "read": NOTHING,
    }


def definitions(prefix: str, vhost: str = "/", queue_type: str = "classic",
                user_prefix: str = "centaure", partitions: int = 0,
                commanders: Iterable[str] = ()) -> dict:
    """The definitions document for ``rabbitmqctl import_definitions``.

    With ``partitions`` it declares the partition queues (as ``bus-config``
    does); the token and members queues and the token exchange are declared
    by the daemons themselves, with the rights given here. ``commanders``:
    the operators' and command services' users, each given
    :func:`command_rights` unless it is a user defined here already or one
    of :data:`BUILTIN_USERS`.
    """
    users = {f"{user_prefix}-{name}": connector_rights(prefix, name, partitions)
             for name in installed()}
    users[user_prefix] = cli_rights(prefix)
    for name in commanders:
        if name not in users and name not in BUILTIN_USERS:
            users[name] = command_rights(prefix)
    queues = all_queues(prefix, queue_type, partitions)
    exchanges = exchange_names(prefix) + (dead_letter_exchange(prefix),)
    return {
        # No password_hash: the user cannot log in until the operator sets one.
        "users": [{"name": u, "password_hash": "", "tags": []} for u in users],
        "vhosts": [{"name": vhost}],
        "permissions": [{"user": u, "vhost": vhost, **rights} for u, rights in users.items()],
        "exchanges": [{"name": e, "vhost": vhost, "type": "topic", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}
                      for e in exchanges],
        "queues": [{"name": q.name, "vhost": vhost, "durable": True, "auto_delete": False,
                    "arguments": dict(q.arguments)} for q in queues],
        "bindings": [{"source": b.exchange, "vhost": vhost, "destination": q.name,
                      "destination_type": "queue", "routing_key": b.pattern, "arguments": {}}
                     for q in queues for b in q.bindings],
    }
