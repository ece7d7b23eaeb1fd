"""Who may command alarms (the correlator's rule) and who may publish what (the broker's rights)."""

from __future__ import annotations

import re

import pytest

from connector import messages
from connector.consumer import RejectedMessage
from connector.permissions import BUILTIN_USERS, definitions
from connector.registry import installed
from connector.settings import settings_from_string
from connector_alarms.authz import CommandPolicy, CommandRefused


def command(user: str = "alice", action: str = "ack") -> messages.AlarmCommand:
    return messages.AlarmCommand(source="cli@n1", ref=42, action=action, user=user, ts=1.0,
                                 host="r1")


def test_an_operator_is_recorded_under_its_broker_user_whatever_the_body_says():
    policy = CommandPolicy(operators=["ops1"], services=["console"])
    applied = policy.authorize(command(user="the-boss"), "ops1")
    assert applied.user == "ops1"
    assert (applied.action, applied.ref, applied.host) == ("ack", 42, "r1")
    assert policy.authorize(command(user="ops1"), "ops1").user == "ops1"


def test_a_trusted_service_acts_for_the_person_it_names():
    policy = CommandPolicy(operators=["ops1"], services=["console"])
    assert policy.authorize(command(user="carol"), "console").user == "carol"


@pytest.mark.parametrize("user_id", ["mallory", "Ops1", "", "console "])
def test_any_other_broker_user_is_refused_with_a_reason_naming_it(user_id):
    policy = CommandPolicy(operators=["ops1"], services=["console"])
    with pytest.raises(CommandRefused) as e:
        policy.authorize(command(action="clear"), user_id)
    assert isinstance(e.value, RejectedMessage)  # the consumer dead-letters it
    assert e.value.kind == "refused"  # counted and told apart from other rejections
    text = str(e.value)
    assert f"broker user {user_id!r}" in text and "clear of alarm 42 refused" in text
    assert "[correlator] operators" in text and "command_services" in text


def test_a_command_without_user_id_is_refused_except_on_the_embedded_bus():
    with pytest.raises(CommandRefused, match="no AMQP user-id property"):
        CommandPolicy(operators=["guest"]).authorize(command(), None)
    # In process, only this process's own code can publish: applied as sent.
    assert CommandPolicy([], in_process=True).authorize(command(user="bob"), None).user == "bob"
    # A user-id on the embedded bus is still checked.
    with pytest.raises(CommandRefused):
        CommandPolicy([], in_process=True).authorize(command(), "mallory")


def test_default_settings_let_guest_and_the_command_user_command():
    conf = settings_from_string("[correlator]\n", discover=True).section("correlator")
    assert (conf.operators, conf.command_services) == (("guest", "centaure"), ())
    policy = CommandPolicy.from_settings(conf)
    assert policy.authorize(command(user="x"), "guest").user == "guest"
    assert policy.authorize(command(user="x"), "centaure").user == "centaure"
    with pytest.raises(CommandRefused):
        policy.authorize(command(), "centaure-traps")
    conf = settings_from_string("[correlator]\noperators = a, b\ncommand_services = web\n",
                                discover=True).section("correlator")
    assert (conf.operators, conf.command_services) == (("a", "b"), ("web",))


# --- the broker's rights (definitions file) ----------------------------------------------


def writers(doc: dict, exchange: str) -> set[str]:
    """Users whose write regex lets them publish to ``exchange``."""
    return {p["user"] for p in doc["permissions"] if re.search(p["write"], exchange)}


@pytest.mark.parametrize("partitions", [0, 8])
def test_only_a_connectors_own_user_publishes_its_message_types(partitions):
    doc = definitions("p", partitions=partitions, commanders=["ops1", "console", "guest"])
    users = {u["name"] for u in doc["users"]}
    assert {"ops1", "console"} <= users
    # RabbitMQ's default user is never redefined (an import would reset its password).
    assert not users & set(BUILTIN_USERS)
    for msg_type in ("perf", "alarm_snapshot", "event", "threshold", "alarm", "notification"):
        owners = {f"centaure-{name}" for name, spec in installed().items()
                  if msg_type in spec.publishes}
        assert writers(doc, f"p.{msg_type}") == owners, msg_type
    # Events raise and clear alarms: the trap receiver's user alone sends them.
    assert writers(doc, "p.event") == {"centaure-traps"}
    # Commands: the centaure command's user, the operators' and the web console's (which
    # the correlator trusts only when [correlator] command_services names it).
    assert writers(doc, "p.alarm_command") == {"centaure", "ops1", "console",
                                               "centaure-console"}
    perms = {p["user"]: p for p in doc["permissions"]}
    for name in ("ops1", "console"):
        assert perms[name] == {"user": name, "vhost": "/", "configure": "^$",
                               "write": r"^(p\.alarm_command)$", "read": "^$"}
    # The default exchange (routing straight to a queue by name; RabbitMQ checks
    # it as amq.default) is nobody's.
    assert writers(doc, "amq.default") == set()


def test_a_commander_already_defined_keeps_its_rights():
    doc = definitions("p", commanders=["centaure", "centaure-traps"])
    perms = {p["user"]: p for p in doc["permissions"]}
    assert re.search(perms["centaure"]["read"], "p.status")  # the command's own rights
    assert not re.search(perms["centaure-traps"]["write"], "p.alarm_command")
    assert len(doc["users"]) == len(perms) == len(installed()) + 1
