"""Least-privilege RabbitMQ users: one per connector, from the topology and the registry.

:func:`definitions` builds a RabbitMQ definitions document (``rabbitmqctl
import_definitions``): the exchanges, queues and bindings ``bus-config``
declares, one user per connector (``<user_prefix>-<connector>``) and one for
the ``centaure`` command (``<user_prefix>``), each with permissions computed
from what it publishes and consumes. Users carry no password (the operator
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
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from connector.registry import installed
from connector.topology import all_queues, dead_letter_exchange, exchange_names

#: The message type the ``centaure`` command publishes (``centaure alarms``).
CLI_PUBLISHES = ("alarm_command",)

#: What never matches a name: RabbitMQ reads an empty regex as "nothing" too,
#: but the explicit form says so.
NOTHING = "^$"


def names_regex(names: Iterable[str]) -> str:
    """A regex matching exactly ``names`` (an anchored alternation), or nothing."""
    unique = sorted(set(names))
    if not unique:
        return NOTHING
    return "^(" + "|".join(re.escape(n) for n in unique) + ")$"


def connector_rights(prefix: str, name: str) -> dict[str, str]:
    """configure / write / read regexes of connector ``name``'s user."""
    spec = installed()[name]
    published = [f"{prefix}.{t}" for t in (*spec.publishes, "status")]
    consumed = [f"{prefix}.{t}" for t in spec.consumes]
    queue = [f"{prefix}.{name}"] if spec.consumes else []
    # A consumer dead-letters what it cannot use itself (connector.consumer).
    dead = [dead_letter_exchange(prefix)] if spec.consumes else []
    # The connection declares the exchanges it publishes to (and the dead-letter one).
    declared = published + [dead_letter_exchange(prefix)] + consumed + queue
    return {
        "configure": names_regex(declared),
        "write": names_regex(published + dead + queue),
        "read": names_regex(queue + consumed),
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


def definitions(prefix: str, vhost: str = "/", queue_type: str = "classic",
                user_prefix: str = "centaure") -> dict:
    """The definitions document for ``rabbitmqctl import_definitions``."""
    users = {f"{user_prefix}-{name}": connector_rights(prefix, name) for name in installed()}
    users[user_prefix] = cli_rights(prefix)
    queues = all_queues(prefix, queue_type)
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
