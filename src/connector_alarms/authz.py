"""Who may ack, unack, clear or annotate an alarm, and under which name it is recorded.

An ``alarm_command`` is trusted for what the broker vouches for: its AMQP
``user-id`` property, which RabbitMQ refuses unless it is the publishing
connection's own user. The command's ``user`` field is only the sender's
word, so it is believed from a trusted service alone (a console acting for
the person logged in to it); an operator's command is recorded under its
broker user whatever the field says. Pure: the service applies the verdict.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from connector import messages
from connector.consumer import RejectedMessage

__all__ = ["CommandPolicy", "CommandRefused"]


class CommandRefused(RejectedMessage):
    """An ``alarm_command`` its sender may not give: dead-lettered, ``str()`` the reason.

    Counted as ``refused`` and named so in the dead-letter line, apart from
    messages rejected for what they hold: a refusal may be someone probing.
    """

    kind = "refused"


class CommandPolicy:
    """The ``[correlator] operators`` and ``command_services`` rule for alarm commands.

    ``in_process``: the embedded bus, where no broker stamps a user-id and only
    code in this process can publish: its commands are taken as a service's.
    """

    __slots__ = ("operators", "services", "in_process")

    def __init__(self, operators: Iterable[str], services: Iterable[str] = (),
                 in_process: bool = False) -> None:
        self.operators = frozenset(operators)
        self.services = frozenset(services)
        self.in_process = in_process

    @classmethod
    def from_settings(cls, conf, in_process: bool = False) -> "CommandPolicy":
        """The policy of a ``[correlator]`` section."""
        return cls(conf.operators, conf.command_services, in_process)

    def authorize(self, command: messages.AlarmCommand,
                  user_id: str | None) -> messages.AlarmCommand:
        """``command`` as it is to be applied, its ``user`` the person who acts.

        Raises :class:`CommandRefused` when ``user_id`` may not command alarms.
        """
        what = f"{command.action} of alarm {command.ref}"
        if user_id is None:
            if self.in_process:
                return command
            raise CommandRefused(
                f"{what} refused: the message has no AMQP user-id property, so its sender is "
                "unknown (publish it with user-id set to the user the connection logs in as, "
                "as 'centaure alarms' does)")
        if user_id in self.services:
            return command
        if user_id in self.operators:
            if command.user == user_id:
                return command
            return msgspec.structs.replace(command, user=user_id)
        raise CommandRefused(
            f"{what} refused: broker user {user_id!r} is neither in [correlator] operators "
            "nor in [correlator] command_services")
