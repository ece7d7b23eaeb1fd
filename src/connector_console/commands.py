"""An operator's ack, unack, clear or note, sent to the correlator as an ``alarm_command``.

The console publishes with its own broker user (the AMQP ``user-id``,
checked by RabbitMQ), which the correlator trusts as a service
(``[correlator] command_services``): the command's ``user`` field is the
person logged in to the console, and that is who the correlator records.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from connector import messages

__all__ = ["ACTIONS", "CommandSender", "NOTE_MAX"]

ACTIONS = ("ack", "unack", "clear", "note")
#: Longest note accepted from the page (characters).
NOTE_MAX = 2000


class CommandSender:
    """Publishes alarm commands for the console's logged-in people."""

    def __init__(self, publisher, source: str, clock: Callable[[], float] = time.time) -> None:
        self.publisher = publisher
        self.source = source
        self.clock = clock

    def check(self, action: str, note: str | None) -> str | None:
        """Why the command cannot be sent as given (None: it can)."""
        if action not in ACTIONS:
            return f"unknown action {action!r} (one of {', '.join(ACTIONS)})"
        if action == "note" and not note:
            return "a note needs some text"
        if note is not None and len(note) > NOTE_MAX:
            return f"the note is longer than {NOTE_MAX} characters"
        return None

    def send(self, ref: int, host: str, action: str, user: str, note: str | None):
        """Publish the command (durable: on disk or confirmed when the Deferred fires)."""
        command = messages.AlarmCommand(source=self.source, ts=self.clock(), ref=ref,
                                        action=action, user=user, note=note or None, host=host)
        return self.publisher.publish(command, durable=True,
                                      message_id=f"console:{uuid.uuid4().hex}")
