"""Ownership tokens on a real 3-node RabbitMQ cluster: a broker node dies under an owner.

Two nodes of a role share 8 partitions, each connected to a different
cluster node. The cluster node under the first one is killed (-9): the
first owner loses its connection, so it owns nothing at once; the token
queues (quorum) elect new leaders and every token reaches a live consumer;
the first owner reconnects to another cluster node and gets its share back.
At no sample do both own the same partition, and no token is lost or
duplicated.
"""

from __future__ import annotations

import os
import signal

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads

from connector.amqp.tokens import TokenHolder
from connector.metrics import Counters
from tests.conftest import settings_text
from tests.integration.support import sleep, start_bus, wait_until

pytestmark = pytest.mark.integration

P = 8
HEARTBEAT = 2.0
#: Interval of the status heartbeats (the connectors' [connector] status_interval).
BEAT = 0.5


def _settings(tmp_path, prefix: str, urls: list[str], name: str) -> str:
    path = tmp_path / f"{name}.ini"
    path.write_text(settings_text(prefix, tmp_path, url=",".join(urls), bus={
        "heartbeat": f"{HEARTBEAT:g}s", "connect_timeout": "3s", "queue_type": "quorum",
        "backoff_initial": "0.2s", "backoff_max": "1s"}))
    return str(path)


def _heartbeats(bus, holder) -> task.LoopingCall:
    """What the connector's StatusService publishes: the holder's ownership, every BEAT s."""
    from connector import messages

    def beat() -> None:
        owned = messages.Ownership(partitions=P, owned=sorted(holder.owned),
                                   members=holder.members)
        d = bus.publisher("t").publish(messages.Status(
            source=f"snmp@{holder.node}", connector="snmp", node=holder.node, pid=os.getpid(),
            version="test", state="ok", uptime=1.0, counters={}, ownership={"snmp": owned}))
        d.addErrback(lambda f: None)

    loop = task.LoopingCall(beat)
    loop.start(BEAT)
    return loop


@pytest_twisted.ensureDeferred
async def test_owner_on_a_killed_broker_node_loses_its_tokens_to_the_other(
        rabbit_cluster, tmp_path, prefix):
    n1, n2, n3 = rabbit_cluster.nodes
    # Node A prefers cluster node 1, node B cluster node 2 (each falls back on the others).
    path_a = _settings(tmp_path, prefix, [n1.url, n3.url, n2.url], "a")
    path_b = _settings(tmp_path, prefix, [n2.url, n3.url, n1.url], "b")
    bus_a = await start_bus(path_a, app_id="a")
    a = TokenHolder("snmp", P, prefix, Counters("a"), reactor, balance_interval=0.5,
                    node="a", status_interval=BEAT)
    bus_a.connection.add_subscriber(a)
    beats = [_heartbeats(bus_a, a)]
    await wait_until(lambda: len(a.owned) == P, 30, "A to own every partition")
    bus_b = await start_bus(path_b, app_id="b")
    b = TokenHolder("snmp", P, prefix, Counters("b"), reactor, balance_interval=0.5,
                    node="b", status_interval=BEAT)
    bus_b.connection.add_subscriber(b)
    beats.append(_heartbeats(bus_b, b))
    overlaps: list[frozenset] = []

    def sample() -> None:
        if a.owned & b.owned:
            overlaps.append(a.owned & b.owned)

    watcher = task.LoopingCall(sample)
    watcher.start(0.02)
    try:
        await wait_until(lambda: len(a.owned) == len(b.owned) == P // 2, 30, "a 4/4 share")
        assert bus_a.connection.broker.port == n1.port
        t0 = reactor.seconds()
        os.kill(n1.vm_pid, signal.SIGKILL)
        await wait_until(lambda: not bus_a.connected or bus_a.connection.broker.port != n1.port,
                         3 * HEARTBEAT, "A to notice its broker node died")
        await wait_until(lambda: a.owned | b.owned == set(range(P)), 60,
                         "every partition to have an owner again")
        recovered = reactor.seconds() - t0
        await wait_until(lambda: len(a.owned) == len(b.owned) == P // 2, 60,
                         "the share to be balanced again")
        # The quorum members queue still counts A's consumer on the dead node;
        # the heartbeats do not: the tokens did not circle between A and B.
        moves = a.counters.get("takeovers") + b.counters.get("takeovers")
        await sleep(3)
        assert a.counters.get("takeovers") + b.counters.get("takeovers") == moves
        print(f"every partition owned again {recovered:.1f}s after the kill")
        assert not overlaps, f"partitions owned twice at once: {overlaps[:3]}"
        assert bus_a.connection.broker.port != n1.port
        # Exactly one token per partition survived: nobody dropped a duplicate.
        assert a.counters.get("tokens_dropped") == b.counters.get("tokens_dropped") == 0
    finally:
        watcher.stop()
        for beat in beats:
            beat.stop()
        await bus_b.stopService()
        await bus_a.stopService()
        await threads.deferToThread(n1.proc.wait, 30)
        rabbit_cluster.start_again(n1)
