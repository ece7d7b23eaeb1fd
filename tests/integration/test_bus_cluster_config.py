"""Quorum topology and least-privilege users, as an operator sets them up on a real RabbitMQ."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor

import pika
import pytest

from tests.conftest import AMQP_URL, ROOT, rabbitmqctl
from connector.topology import DELIVERY_LIMIT, connector_queue

pytestmark = pytest.mark.integration
CENTAURE = os.path.join(os.path.dirname(sys.executable), "centaure")


def _centaure(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CENTAURE, *args], capture_output=True, text=True, cwd=ROOT, timeout=60)


def _queues(prefix: str) -> dict[str, tuple[str, dict]]:
    """name -> (type, arguments), as ``rabbitmqctl list_queues`` shows the prefix's queues."""
    out = rabbitmqctl("list_queues", "name", "type", "arguments", "--no-table-headers")
    found = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if parts[0].startswith(prefix + "."):
            # Arguments print as [{"x-key","text"},{"x-key",123}].
            args = {k: text if text else int(number)
                    for k, text, number in re.findall(r'\{"([^"]+)",(?:"([^"]*)"|(-?\d+))\}', parts[2])}
            found[parts[0]] = (parts[1], args)
    return found


def test_bus_config_quorum_declares_every_queue_quorum_with_its_arguments(write_settings, prefix):
    settings = write_settings(bus={"queue_type": "quorum"})
    out = _centaure("bus-config", "-c", settings)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("bus configured")

    queues = _queues(prefix)
    assert set(queues) == {f"{prefix}.{n}" for n in ("db", "correlator", "alerter", "console",
                                                     "dead", "status")}
    assert all(kind == "quorum" for kind, _ in queues.values()), queues
    for name in ("db", "correlator", "alerter"):
        assert queues[f"{prefix}.{name}"][1] == {
            "x-queue-type": "quorum", "x-dead-letter-exchange": f"{prefix}.dead",
            "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish",
            "x-delivery-limit": DELIVERY_LIMIT, "x-queue-leader-locator": "balanced"}
    assert queues[f"{prefix}.status"][1] == {
        "x-queue-type": "quorum", "x-queue-leader-locator": "balanced", "x-overflow": "drop-head",
        "x-max-length": 10000, "x-message-ttl": 15 * 60 * 1000}
    assert queues[f"{prefix}.dead"][1] == {"x-queue-type": "quorum",
                                           "x-queue-leader-locator": "balanced"}
    # The web console's views are rebuilt at its start: its queue drops what it no longer needs.
    assert queues[f"{prefix}.console"][1] == {
        "x-queue-type": "quorum", "x-queue-leader-locator": "balanced", "x-overflow": "drop-head",
        "x-max-length": 100_000, "x-message-ttl": 10 * 60 * 1000}

    # Declaring again with the same arguments (as the daemons do) is accepted.
    again = _centaure("bus-config", "-c", settings)
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_message_dead_lettered_by_a_quorum_queue_lands_in_dead(write_settings, prefix):
    settings = write_settings(bus={"queue_type": "quorum"})
    assert _centaure("bus-config", "-c", settings).returncode == 0
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(f"{prefix}.perf", "perf.poison", b'{"poison": 1}',
                         pika.BasicProperties(delivery_mode=2, message_id="poison-1"))
        # Handed back DELIVERY_LIMIT times (a crash loop, say): the broker gives up.
        for _ in range(DELIVERY_LIMIT + 1):
            method, _props, _body = ch.basic_get(f"{prefix}.db")
            assert method is not None, "the message left the queue too early"
            ch.basic_nack(method.delivery_tag, requeue=True)
        assert ch.basic_get(f"{prefix}.db")[0] is None
        for _ in range(100):
            method, props, body = ch.basic_get(f"{prefix}.dead", auto_ack=True)
            if method is not None:
                break
            conn.sleep(0.05)
        assert method is not None, "nothing reached the dead-letter queue"
        assert body == b'{"poison": 1}' and props.message_id == "poison-1"
        death = props.headers["x-death"][0]
        assert death["queue"] == f"{prefix}.db" and death["reason"] == "delivery_limit"
    finally:
        conn.close()


def test_bus_config_names_a_queue_declared_with_other_arguments(write_settings, prefix):
    assert _centaure("bus-config", "-c", write_settings()).returncode == 0
    out = _centaure("bus-config", "-c", write_settings(bus={"queue_type": "quorum"}))
    assert out.returncode == 1
    assert f"ERROR: queue {prefix}.db exists on the broker with other arguments" in out.stdout
    assert f"rabbitmqctl delete_queue {prefix}.db" in out.stdout
    assert "x-queue-type" in out.stdout  # the broker's own reason
    assert "bus NOT fully configured: 6 queue(s) differ" in out.stdout
    # Nothing was changed: the queues are still classic.
    assert {kind for kind, _ in _queues(prefix).values()} == {"classic"}


@pytest.fixture
def users():
    """A unique user-name prefix; its users are deleted afterwards."""
    p = f"u{uuid.uuid4().hex[:8]}"
    yield p
    for line in rabbitmqctl("list_users", "--no-table-headers").splitlines():
        name = line.split("\t")[0]
        if name == p or name.startswith(p + "-"):
            rabbitmqctl("delete_user", name)


def _url(user: str, password: str) -> pika.URLParameters:
    return pika.URLParameters(f"amqp://{user}:{password}@127.0.0.1:5672/%2F")


def _refused(action) -> str:
    """Run ``action``; return the broker's reason when it refuses with ACCESS_REFUSED."""
    try:
        action()
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 403, e
        return e.reply_text
    raise AssertionError("the broker allowed it")


@pytest.fixture
def definitions_path():
    """A file rabbitmqctl can read (it runs as the broker's user, not as the test's)."""
    path = pathlib.Path(tempfile.gettempdir()) / f"centaure-definitions-{uuid.uuid4().hex}.json"
    yield path
    path.unlink(missing_ok=True)


def test_definitions_give_each_connector_only_its_rights(write_settings, prefix, users,
                                                          definitions_path):
    # An operator's user: the definitions give it the right to publish commands only.
    settings = write_settings(bus={"queue_type": "quorum"},
                              correlator={"operators": f"guest, {users}-op"})
    path = definitions_path
    out = _centaure("bus-config", "-c", settings, "--definitions", str(path),
                    "--user-prefix", users)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(path.read_text())
    assert all(not u.get("password_hash") for u in doc["users"])
    assert f"{users}-op" in {u["name"] for u in doc["users"]}
    assert "guest" not in {u["name"] for u in doc["users"]}  # never redefined
    path.chmod(0o644)
    rabbitmqctl("import_definitions", str(path))
    assert {kind for kind, _ in _queues(prefix).values()} == {"quorum"}

    # Imported users cannot log in until the operator sets a password.
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(_url(f"{users}-snmp", "anything"))
    rabbitmqctl("change_password", f"{users}-snmp", "poller-pw")
    rabbitmqctl("change_password", f"{users}-db", "writer-pw")

    poller = pika.BlockingConnection(_url(f"{users}-snmp", "poller-pw"))
    try:
        ch = poller.channel()
        ch.confirm_delivery()
        ch.basic_publish(f"{prefix}.perf", "perf.r1", b"{}", pika.BasicProperties(delivery_mode=2))
        # What its connection declares at start is allowed too.
        ch.exchange_declare(f"{prefix}.alarm_snapshot", "topic", durable=True)
        reason = _refused(lambda: ch.basic_publish(f"{prefix}.alarm_command", "alarm_command.x", b"{}"))
        assert f"exchange '{prefix}.alarm_command'" in reason
        ch = poller.channel()
        assert "access to queue" in _refused(lambda: ch.basic_get(f"{prefix}.db"))
    finally:
        if poller.is_open:
            poller.close()

    # Only the trap receiver publishes events (they raise and clear alarms); an
    # operator and the centaure command publish commands and nothing else.
    rabbitmqctl("change_password", f"{users}-op", "op-pw")
    rabbitmqctl("change_password", users, "cli-pw")
    for user, password in ((f"{users}-op", "op-pw"), (users, "cli-pw")):
        person = pika.BlockingConnection(_url(user, password))
        try:
            ch = person.channel()
            ch.confirm_delivery()
            ch.basic_publish(f"{prefix}.alarm_command", "alarm_command.r1", b"{}",
                             pika.BasicProperties(user_id=user))
            reason = _refused(lambda: ch.basic_publish(f"{prefix}.event", "event.r1", b"{}"))
            assert f"exchange '{prefix}.event'" in reason
            ch = person.channel()
            ch.confirm_delivery()  # the refusal comes with the publish, not later
            reason = _refused(lambda: ch.basic_publish(f"{prefix}.perf", "perf.r1", b"{}"))
            assert f"exchange '{prefix}.perf'" in reason
        finally:
            if person.is_open:
                person.close()

    writer = pika.BlockingConnection(_url(f"{users}-db", "writer-pw"))
    try:
        ch = writer.channel()
        # What the SQL writer declares at start: its queue and bindings.
        queue = connector_queue(prefix, "db", "quorum")
        ch.queue_declare(queue.name, durable=True, arguments=queue.arguments)
        for binding in queue.bindings:
            ch.exchange_declare(binding.exchange, "topic", durable=True)
            ch.queue_bind(queue.name, binding.exchange, binding.pattern)
        method, _props, body = ch.basic_get(f"{prefix}.db", auto_ack=True)
        assert method is not None and body == b"{}"  # the poller's message
        reason = _refused(lambda: ch.basic_get(f"{prefix}.correlator"))
        assert f"queue '{prefix}.correlator'" in reason
        ch = writer.channel()
        assert "access to queue" in _refused(lambda: ch.queue_delete(f"{prefix}.alerter"))
    finally:
        if writer.is_open:
            writer.close()


def test_status_and_health_name_the_broker_node_of_daemons_on_quorum_queues(tmp_path, write_settings,
                                                                            prefix):
    """centaure-all on quorum queues declared by bus-config: the same arguments, accepted."""
    from tests.integration.test_daemon import TWISTD, _free_port, _free_udp_port, _get, _wait
    from centaure.shipped import example_path
    from connector_snmp.profiles import SHIPPED_PROFILES_DIR

    port = _free_port()
    (tmp_path / "inventory.yaml").write_text("devices: []\n")
    settings = write_settings(bus={"queue_type": "quorum"}, connector={"http_port": str(port)},
                              snmp={"profiles": SHIPPED_PROFILES_DIR},
                              traps={"listen": f"127.0.0.1:{_free_udp_port()}",
                                     "definitions": example_path("traps.yaml")})
    assert _centaure("bus-config", "-c", settings).returncode == 0
    cluster = rabbitmqctl("eval", "rabbit_nodes:cluster_name().").strip().strip('<>"')
    with open(tmp_path / "twistd.log", "w") as log:
        proc = subprocess.Popen([TWISTD, "-n", "--pidfile=", "centaure-all", "-c", settings],
                                cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONPATH=ROOT))
        try:
            status, body = _wait(lambda: (lambda r: r if r[0] == 200 else None)(
                _get(f"http://127.0.0.1:{port}/health")), 30, "/health to answer 200")
            health = json.loads(body)
            assert health["broker_address"] == "127.0.0.1:5672"
            assert health["broker_cluster"] == cluster

            def status_lists_all():
                out = _centaure("status", "-c", settings)
                assert out.returncode == 0, out.stderr
                lines = [l for l in out.stdout.splitlines() if l.startswith("testnode")]
                return lines if len(lines) >= 5 and all(" ok " in l for l in lines) else None

            lines = _wait(status_lists_all, 60, "centaure status to list the connectors")
            assert all(f"  127.0.0.1:5672 ({cluster})  " in l for l in lines), lines
            # Heartbeats carry the user that published them, checked by the broker.
            conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
            try:
                method, props, _body = conn.channel().basic_get(f"{prefix}.status")
                assert method is not None and props.user_id == "guest"
            finally:
                conn.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    text = (tmp_path / "twistd.log").read_text()
    assert "PRECONDITION_FAILED" not in text and "could not start consuming" not in text


def _cluster_cleanup(cluster, prefix: str, users: str) -> None:
    """Delete the prefix's queues and exchanges and the users' accounts from the cluster."""
    from tests.cluster import ctl

    node = cluster.nodes[0].name
    # Each rabbitmqctl run starts an Erlang VM (about a second): the runs go in parallel.
    with ThreadPoolExecutor(4) as pool:
        queues = pool.submit(ctl, node, "list_queues", "name", "--no-table-headers")
        exchanges = pool.submit(ctl, node, "list_exchanges", "name", "--no-table-headers")
        names = [line.split("\t")[0]
                 for line in ctl(node, "list_users", "--no-table-headers").splitlines()]
        deleted = [pool.submit(ctl, node, "delete_user", name) for name in names
                   if name == users or name.startswith(users + "-")]
        for d in deleted:
            d.result()
        queues, exchanges = queues.result().split(), exchanges.result().split()
    conn = pika.BlockingConnection(pika.URLParameters(cluster.nodes[0].url))
    try:
        ch = conn.channel()
        for name in queues:
            if name.startswith(prefix + "."):
                ch.queue_delete(queue=name)
        for name in exchanges:
            if name.startswith(prefix + "."):
                ch.exchange_delete(exchange=name)
    finally:
        conn.close()


def test_definitions_imported_on_one_cluster_node_hold_on_another(rabbit_cluster, write_settings,
                                                                  prefix, definitions_path):
    """Users and permissions imported through node 1 are enforced by node 2: they replicate."""
    from tests.cluster import ctl

    cluster = rabbit_cluster
    users = f"u{uuid.uuid4().hex[:8]}"
    settings = write_settings(url=",".join(cluster.urls), bus={"queue_type": "quorum"},
                              correlator={"operators": f"{users}-op"})
    out = _centaure("bus-config", "-c", settings, "--definitions", str(definitions_path),
                    "--user-prefix", users)
    assert out.returncode == 0, out.stdout + out.stderr
    definitions_path.chmod(0o644)
    first, other = cluster.nodes[0], cluster.nodes[1]
    try:
        ctl(first.name, "import_definitions", str(definitions_path))
        ctl(first.name, "change_password", f"{users}-snmp", "poller-pw")

        poller = pika.BlockingConnection(pika.URLParameters(
            f"amqp://{users}-snmp:poller-pw@127.0.0.1:{other.port}/%2F"))
        try:
            ch = poller.channel()
            ch.confirm_delivery()
            ch.basic_publish(f"{prefix}.perf", "perf.r1", b'{"cluster": 1}',
                             pika.BasicProperties(delivery_mode=2))
            reason = _refused(lambda: ch.basic_publish(f"{prefix}.alarm_command",
                                                       "alarm_command.x", b"{}"))
            assert f"exchange '{prefix}.alarm_command'" in reason
        finally:
            if poller.is_open:
                poller.close()

        # The confirmed message sits in the quorum queue the import declared, read on node 3.
        reader = pika.BlockingConnection(pika.URLParameters(cluster.nodes[2].url))
        try:
            method, _props, body = reader.channel().basic_get(f"{prefix}.db", auto_ack=True)
            assert method is not None and body == b'{"cluster": 1}'
        finally:
            reader.close()
    finally:
        _cluster_cleanup(cluster, prefix, users)
