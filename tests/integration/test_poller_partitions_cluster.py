"""Two pollers on a 3-node RabbitMQ cluster: the node under one of them is stopped.

``alpha`` is connected to cluster node 1 only, ``beta`` to nodes 2 and 3;
both share twenty devices by 16 ``snmp`` partitions (quorum token queues).
Cluster node 1 is stopped cleanly (``rabbitmqctl stop``): alpha's connection
closes, so it polls nothing; the token queues elect leaders on the other
nodes and beta takes every token: it polls every device within ``BOUND``
seconds of the stop, and no device goes unpolled for longer than that plus
two intervals. Node 1 is started again afterwards (the cluster is shared by
the session; the next test that asks for it waits for the node).
"""

from __future__ import annotations

import time

import pika
import pytest

from tests.integration.daemons import TwistdDaemon
from tests.integration.test_bus_failover_cluster import _declare_quorum_queue
from tests.integration.test_poller_alarm import device_names
from tests.integration.test_poller_partitions import (
    INTERVAL,
    PARTITIONS,
    Samples,
    _owned,
    _setup,
    _wait_balanced,
)

pytestmark = pytest.mark.integration

#: From ``rabbitmqctl stop`` on node 1 to every device polled by beta: the
#: stop itself (a few seconds), leader elections of the token queues, the
#: token to beta, then up to one interval to a device's first poll.
BOUND = 15.0


def _delete_prefixed(cluster, prefix: str) -> None:
    """Remove the test's queues and exchanges from the cluster (shared by the session)."""
    from tests.cluster import ctl

    node = cluster.nodes[1]
    conn = pika.BlockingConnection(pika.URLParameters(node.url))
    try:
        ch = conn.channel()
        for name in ctl(node.name, "list_queues", "name").split():
            if name.startswith(prefix + "."):
                ch.queue_delete(queue=name)
        for name in ctl(node.name, "list_exchanges", "name").split():
            if name.startswith(prefix + "."):
                ch.exchange_delete(exchange=name)
    finally:
        conn.close()


def test_a_poller_whose_broker_node_stops_hands_its_devices_over(rabbit_cluster, snmpd_agents,
                                                                 tmp_path, prefix):
    n1, n2, n3 = rabbit_cluster.nodes
    devices = device_names(snmpd_agents)
    samples = Samples(_declare_quorum_queue(rabbit_cluster, prefix), url=n2.url)
    bus = {"connect_timeout": "3s", "queue_type": "quorum", "backoff_initial": "0.2s",
           "backoff_max": "1s"}
    a_path, a_port = _setup(tmp_path, prefix, snmpd_agents, "alpha", url=n1.url, **bus)
    b_path, b_port = _setup(tmp_path, prefix, snmpd_agents, "beta",
                            url=",".join([n2.url, n3.url]), **bus)
    alpha = TwistdDaemon("centaure-snmp", a_path, http_port=a_port)
    beta = TwistdDaemon("centaure-snmp", b_path, http_port=b_port)
    stopped = False
    try:
        _wait_balanced(alpha, beta)
        balanced = time.time()
        samples.read_until(lambda: time.time() > balanced + 2 * INTERVAL + 1, 15, "two rounds")
        shared = samples.pollers(balanced, balanced + 2 * INTERVAL)
        alphas = sorted(d for d, nodes in shared.items() if nodes == {"alpha"})
        assert alphas and sorted(shared) == devices, shared
        t0 = time.time()
        stopped = True
        n1.stop()
        node_stopped = time.time() - t0
        samples.read_until(lambda: set(samples.first_by("beta", t0)) == set(devices),
                           BOUND + 10, "beta to poll every device")
        taken = max(samples.first_by("beta", t0)[d] for d in alphas) - t0
        owned = _owned(beta)
        samples.read_until(lambda: time.time() > t0 + taken + 2 * INTERVAL + 1, 10, "a round")
        alpha_after = [ts for _, node, ts in samples.rows if node == "alpha" and ts > t0 + taken]
    finally:
        alpha.stop()
        beta.stop()
        if stopped:
            rabbit_cluster.start_again(n1)
        _delete_prefixed(rabbit_cluster, prefix)

    print(f"node 1 stopped in {node_stopped:.1f}s; beta polled alpha's {len(alphas)} devices "
          f"{taken:.1f}s after the stop began")
    assert taken <= BOUND, f"takeover took {taken:.1f}s"
    assert owned == set(range(PARTITIONS))
    assert not alpha_after, "alpha still polled without its broker node"
    gaps = {d: round(g, 1) for d, g in samples.longest_gaps(balanced).items()
            if g > BOUND + 2 * INTERVAL}
    assert not gaps, f"devices unpolled for more than {BOUND + 2 * INTERVAL}s: {gaps}"
