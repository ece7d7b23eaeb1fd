"""The poller keeps its schedule while the node it publishes to is frozen.

``twistd centaure-snmp`` polls twenty devices (twenty real snmpd agents) every
2 s, with ``[bus] url`` listing the three nodes of a real RabbitMQ cluster
(heartbeat 5 s). The node it is connected to (read from ``/health``) is
frozen (SIGSTOP) for 15 s (three heartbeats), then thawed. The daemon must be on another node
within two heartbeats, and, read back from a quorum queue afterwards, each
device's samples have no gap above 1.5 intervals: no poll was missed and
every sample taken meanwhile was delivered. Copies of a sample (published
again after the connection dropped, at-least-once) are allowed and counted.
"""

from __future__ import annotations

import time
from pathlib import Path

import pika
import pytest
import yaml

from tests.cluster import free_port
from tests.conftest import settings_text
from tests.integration.daemons import TwistdDaemon
from tests.integration.test_bus_failover_cluster import _declare_quorum_queue
from tests.integration.test_poller import PROFILES
from tests.integration.test_poller_alarm import (
    INTERVAL,
    add_samples,
    assert_no_poll_missed,
    device_names,
    inventory,
    read_until,
    take,
)

pytestmark = pytest.mark.integration

HEARTBEAT = 5.0
FREEZE = 15.0


def _write_setup(tmp_path, prefix: str, cluster, devices: list[dict], http_port: int) -> Path:
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"devices": devices}))
    (tmp_path / "credentials.yaml").write_text(yaml.safe_dump(
        {"default": {"version": "v2c", "community": "public"}}))
    path = tmp_path / "settings.ini"
    path.write_text(settings_text(
        prefix, tmp_path, url=",".join(cluster.urls),
        bus={"heartbeat": f"{HEARTBEAT:g}s", "connect_timeout": "3s", "confirm_timeout": "5s",
             "queue_type": "quorum", "backoff_initial": "0.2s", "backoff_max": "2s"},
        connector={"http_port": str(http_port)},
        inventory={"path": "inventory.yaml", "port_column": "port", "reload_interval": "0"},
        snmp={"profiles": PROFILES, "credentials": "credentials.yaml",
              "interval": f"{INTERVAL:g}s", "timeout": "1s", "retries": "0"}))
    return path


def _node_at(cluster, address: str):
    """The cluster node whose AMQP listener is ``host:port``."""
    return cluster.node_for_port(int(address.rsplit(":", 1)[1]))


def _delete(cluster, queue: str) -> None:
    """Remove the test's queue and exchange from the cluster (shared by the session)."""
    conn = pika.BlockingConnection(pika.URLParameters(
        next(n.url for n in cluster.nodes if not n.frozen)))
    try:
        ch = conn.channel()
        ch.queue_delete(queue=queue)
        ch.exchange_delete(exchange=f"{queue.rsplit('.', 1)[0]}.perf")
    finally:
        conn.close()


def test_no_poll_missed_while_the_connected_node_is_frozen(rabbit_cluster, snmpd_agents,
                                                           tmp_path, prefix):
    devices = device_names(snmpd_agents)
    queue = _declare_quorum_queue(rabbit_cluster, prefix)
    settings = _write_setup(tmp_path, prefix, rabbit_cluster, inventory(snmpd_agents),
                            http_port := free_port())
    daemon = TwistdDaemon("centaure-snmp", settings, http_port=http_port)
    samples: dict[str, set[float]] = {}
    duplicates = 0

    def read() -> None:
        nonlocal duplicates
        url = next(n.url for n in rabbit_cluster.nodes if not n.frozen)
        duplicates += add_samples(take(url, queue), samples)

    try:
        read_until(read, devices, samples, 0.0, 60)
        health = daemon.wait_health(lambda s, b: b.get("broker_address"), timeout=30)
        node = _node_at(rabbit_cluster, health["broker_address"])
        frozen_on = time.time()
        node.freeze()
        try:
            moved = daemon.wait_health(
                lambda s, b: b.get("connected") and b.get("broker_address")
                and _node_at(rabbit_cluster, b["broker_address"]) is not node, timeout=60)
            failover = time.time() - frozen_on
            time.sleep(max(0.0, frozen_on + FREEZE - time.time()))
            # The frozen node is never the one the daemon goes back to meanwhile.
            _, now = daemon.health()
            assert not now.get("broker_address") or \
                _node_at(rabbit_cluster, now["broker_address"]) is not node, now
        finally:
            node.thaw()
        thawed = time.time()
        rabbit_cluster.wait_running()
        read_until(read, devices, samples, thawed + 2 * INTERVAL, 120)
        log = daemon.logs()
    finally:
        daemon.stop()
        _delete(rabbit_cluster, queue)

    total = sum(len(ts) for ts in samples.values())
    print(f"failover to {moved['broker_address']} in {failover:.2f}s; "
          f"{total} samples, {duplicates} duplicate(s)")
    assert failover <= 2 * HEARTBEAT, f"failover took {failover:.1f}s"
    assert_no_poll_missed(devices, samples, frozen_on, thawed)
    assert "still running after" not in log, "a poll was skipped (overrun)"
