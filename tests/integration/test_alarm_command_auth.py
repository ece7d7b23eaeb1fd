"""Who may ack, clear or annotate an alarm: ``centaure-correlator`` on the real RabbitMQ.

What an operator checks, with broker users made by ``rabbitmqctl`` and given
the rights of the definitions file (``alarm_command`` only):

* a user that may publish commands but is not in ``[correlator] operators``
  acks and clears under another person's name: both are dead-lettered with
  the reason, the alarm stays unacked and active;
* a command without user-id is dead-lettered; one whose user-id is another
  user's is refused by the broker itself;
* ``centaure alarms ack`` run by an operator is applied and recorded under the
  operator's broker user; run by a trusted service with ``--user carol``, under
  carol;
* an operator struck off ``operators`` (SIGHUP) has its next command refused.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid

import pika
import pytest

from connector import messages
from connector.consumer import REASON_HEADER
from connector.permissions import command_rights
from tests.conftest import AMQP_URL, ROOT, rabbitmqctl, settings_text
from tests.integration.daemons import TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port
from tests.integration.support import declare_check_queue, declare_consumer_queues
from tests.integration.test_publisher_drop_log import bus_metrics

pytestmark = pytest.mark.integration
TS = 1_790_000_000.0
HOST = "r1"


@pytest.fixture
def users():
    """Three broker users with the operators' rights on the test's exchanges; deleted after.

    ``op`` is an operator, ``web`` a command service, ``mallory`` neither.
    """
    tag = uuid.uuid4().hex[:8]
    made = {role: (f"{role}-{tag}", uuid.uuid4().hex) for role in ("op", "web", "mallory")}
    yield made
    for name, _ in made.values():
        try:
            rabbitmqctl("delete_user", name)
        except RuntimeError:
            pass  # never created


def grant(prefix: str, users: dict) -> None:
    rights = command_rights(prefix)
    for name, password in users.values():
        rabbitmqctl("add_user", name, password)
        rabbitmqctl("set_permissions", "-p", "/", name, rights["configure"], rights["write"],
                    rights["read"])


def publish(url: str, prefix: str, message, user_id: str | None) -> None:
    """Publish ``message`` with publisher confirms; ``user_id`` as the AMQP property."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(f"{prefix}.{message.msg_type}", messages.routing_key(message),
                         messages.encode(message),
                         pika.BasicProperties(message_id=uuid.uuid4().hex,
                                              type=message.msg_type, delivery_mode=2,
                                              user_id=user_id))
    finally:
        if conn.is_open:
            conn.close()


def next_messages(queue: str, want: int, timeout: float = 30) -> list[tuple]:
    """(properties, body) of the next ``want`` messages of ``queue``."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    got: list[tuple] = []
    deadline = time.monotonic() + timeout
    try:
        ch = conn.channel()
        while len(got) < want and time.monotonic() < deadline:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                time.sleep(0.05)
                continue
            got.append((props, body))
    finally:
        conn.close()
    assert len(got) == want, f"{len(got)} of {want} messages from {queue}: {got}"
    return got


def next_alarm(queue: str) -> messages.Alarm:
    ((_, body),) = next_messages(queue, 1)
    return messages.decode(body, expected_type="alarm")


def amqp_url(user: str, password: str) -> str:
    return f"amqp://{user}:{password}@127.0.0.1:5672/%2F"


def command(ref: int, action: str, user: str) -> messages.AlarmCommand:
    return messages.AlarmCommand(source="test@n1", ref=ref, action=action, user=user,
                                 host=HOST, ts=time.time())


def alarms_cli(ini, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "centaure.cli", "alarms", *args, "-c",
                           str(ini)], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_only_operators_and_trusted_services_command_alarms(tmp_path, prefix, users):
    grant(prefix, users)
    (op, op_pw), (web, web_pw), (mallory, mallory_pw) = (users[r] for r in
                                                         ("op", "web", "mallory"))
    declare_consumer_queues(prefix, "correlator", dead_letters=True)
    alarm_queue = declare_check_queue(prefix, "alarm")
    db_url = f"sqlite:///{tmp_path}/correlator.sqlite3"
    correlator = {"table_prefix": "corr_", "batch_interval": "20ms", "operators": op,
                  "command_services": web}
    port = free_tcp_port()
    ini = tmp_path / "correlator.ini"
    ini.write_text(settings_text(prefix, tmp_path, connector={"http_port": str(port)},
                                 database={"url": db_url}, correlator=correlator))
    daemon = TwistdDaemon("centaure-correlator", ini, port)
    try:
        daemon.wait_health(lambda status, body: body.get("connectors", {})
                           .get("correlator", {}).get("state") == "ready")
        publish(AMQP_URL, prefix, messages.Event(
            ts=TS, source="traps@n1", host=HOST, address="10.0.0.1", snmp_version="v2c",
            trap_oid="1.3.6.1.6.3.1.1.5.3", name="linkDown", severity="major", varbinds=[],
            message="down", action="raise", alarm="linkDown", key="3"), None)
        raised = next_alarm(alarm_queue)
        assert (raised.state, raised.host, raised.acked_by) == ("raised", HOST, None)

        # Allowed by the broker to publish commands, but not an operator: it acks and
        # clears in the operator's name.
        mallory_url = amqp_url(mallory, mallory_pw)
        publish(mallory_url, prefix, command(raised.ref, "ack", op), mallory)
        publish(mallory_url, prefix, command(raised.ref, "clear", op), mallory)
        # No user-id: the sender is unknown (guest is no operator here).
        publish(AMQP_URL, prefix, command(raised.ref, "ack", op), None)
        # The broker refuses a user-id that is not the connection's own user.
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            publish(mallory_url, prefix, command(raised.ref, "ack", op), op)
        assert refused.value.reply_code == 406 and "user_id property" in refused.value.reply_text

        dead = next_messages(f"{prefix}.dead", 3)
        reasons = [props.headers[REASON_HEADER] for props, _ in dead]
        assert reasons[0].startswith(f"rejected: ack of alarm {raised.ref} refused: broker "
                                     f"user {mallory!r} is neither in [correlator] operators")
        assert reasons[1].startswith(f"rejected: clear of alarm {raised.ref} refused: broker "
                                     f"user {mallory!r}")
        assert "no AMQP user-id property" in reasons[2]
        assert [messages.decode(body).action for _, body in dead] == ["ack", "clear", "ack"]

        # The alarm is unchanged: active, acked by nobody.
        listed = alarms_cli(ini, "--json")
        assert listed.returncode == 0, listed.stderr
        ((row),) = json.loads(listed.stdout)
        assert (row["ref"], row["active"], row["acked_by"]) == (raised.ref, True, None)

        # The operator acks with the command, which logs in as the operator.
        op_ini = tmp_path / "op.ini"
        op_ini.write_text(settings_text(prefix, tmp_path, url=amqp_url(op, op_pw),
                                        database={"url": db_url}, correlator=correlator))
        out = alarms_cli(op_ini, "ack", str(raised.ref), "--note", "on it")
        assert out.returncode == 0, out.stderr
        assert f"sent as {op}" in out.stdout
        refused_user = alarms_cli(op_ini, "ack", str(raised.ref), "--user", "alice")
        assert refused_user.returncode == 1
        assert "--user is only for a trusted service" in refused_user.stderr
        # The first change the correlator publishes is the operator's: nothing before it.
        acked = next_alarm(alarm_queue)
        assert (acked.state, acked.ref, acked.acked_by) == ("updated", raised.ref, op)

        # A trusted service (a console) acts for the person logged in to it.
        web_ini = tmp_path / "web.ini"
        web_ini.write_text(settings_text(prefix, tmp_path, url=amqp_url(web, web_pw),
                                         database={"url": db_url}, correlator=correlator))
        out = alarms_cli(web_ini, "ack", str(raised.ref), "--user", "carol")
        assert out.returncode == 0, out.stderr
        assert f"sent by {web} on behalf of carol" in out.stdout
        acked = next_alarm(alarm_queue)
        assert (acked.state, acked.ref, acked.acked_by) == ("updated", raised.ref, "carol")

        # The operator is struck off the list: after a reload its commands are refused.
        ini.write_text(settings_text(prefix, tmp_path, connector={"http_port": str(port)},
                                     database={"url": db_url},
                                     correlator={**correlator, "operators": "guest"}))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("correlator reloaded")
        assert "settings operators;" in daemon.logs()
        out = alarms_cli(op_ini, "unack", str(raised.ref))
        assert out.returncode == 0, out.stderr
        ((props, _),) = next_messages(f"{prefix}.dead", 1)
        assert f"unack of alarm {raised.ref} refused: broker user {op!r}" in \
            props.headers[REASON_HEADER]
        ((row),) = json.loads(alarms_cli(ini, "--json").stdout)
        assert (row["ref"], row["active"], row["acked_by"]) == (raised.ref, True, "carol")

        # Counted and told as refused commands, not as other rejected messages.
        counted = bus_metrics(port)
        assert counted["refused"] == counted["dead_lettered"] == 4, counted
        assert "rejected" not in counted
        logs = daemon.logs()
        assert "messages dead-lettered: 1 refused (totals: refused 1); first refused: " \
               f"ack of alarm {raised.ref} refused: broker user {mallory!r}" in logs
        assert f"broker user {mallory!r} is neither in [correlator] operators" in logs
        assert f"alarm command: ack of alarm {raised.ref} ({HOST}) by {op} (broker user {op})" \
            in logs
        assert not any(pw in logs for pw in (op_pw, web_pw, mallory_pw))
    finally:
        daemon.stop()
