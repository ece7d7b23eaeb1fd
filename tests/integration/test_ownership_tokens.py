"""Ownership tokens on the real broker: shared, balanced, taken over, refreshed."""

from __future__ import annotations

import pytest
import pytest_twisted
from zope.interface import implementer
from zope.interface.verify import verifyObject

from connector.amqp.tokens import TokenHolder
from connector.interfaces import IOwnership, IOwnershipListener
from connector.metrics import Counters
from connector.partitions import partition_of
from tests.integration.support import sleep, start_bus, wait_until

pytestmark = pytest.mark.integration

P = 8


@implementer(IOwnershipListener)
class Journal:
    """Records what a holder tells its listeners."""

    def __init__(self) -> None:
        self.events: list[tuple[str, frozenset]] = []

    def gained(self, partitions):
        self.events.append(("gained", partitions))

    def releasing(self, partitions):
        self.events.append(("releasing", partitions))

    def lost(self, partitions):
        self.events.append(("lost", partitions))


async def _node(settings_path: str, name: str, prefix: str, **kw):
    from twisted.internet import reactor

    bus = await start_bus(settings_path, app_id=name)
    # Heartbeats every second, as the daemons' tests run them: a hand-on waits
    # 1.5 of them before the next.
    kw.setdefault("status_interval", 1.0)
    holder = TokenHolder("snmp", P, prefix, Counters(name), reactor, node=name, **kw)
    journal = Journal()
    holder.add_listener(journal)
    bus.connection.add_subscriber(holder)
    return bus, holder, journal


@pytest_twisted.ensureDeferred
async def test_two_nodes_share_the_partitions_and_one_takes_over(prefix, write_settings):
    path = write_settings()
    bus1, one, journal1 = await _node(path, "node1", prefix, balance_interval=0.5)
    try:
        verifyObject(IOwnership, one)
        verifyObject(IOwnershipListener, journal1)
        await wait_until(lambda: len(one.owned) == P, 15, "node1 to own every partition")
        bus2, two, journal2 = await _node(path, "node2", prefix, balance_interval=0.5)
        bus2.before_stop(two.drain)  # as connector.ownership.ownership() does
        try:
            await wait_until(lambda: len(one.owned) == len(two.owned) == P // 2, 30,
                             "the partitions to be shared 4/4")
            assert one.owned.isdisjoint(two.owned)
            assert one.owned | two.owned == set(range(P))
            # Hosts follow their partitions: each is owned by exactly one node.
            hosts = [f"router{i}.example.net" for i in range(100)]
            assert all(one.owns("snmp", h) != two.owns("snmp", h) for h in hosts)
            assert {partition_of(h, P) for h in hosts if one.owns("snmp", h)} <= one.owned
            # The node that handed partitions on was asked to finish first.
            handed = [p for kind, ps in journal1.events if kind == "releasing" for p in ps]
            assert sorted(handed) == sorted(two.owned)
            # Stable once balanced: nothing moves in the next seconds.
            owned1, owned2 = one.owned, two.owned
            await sleep(2)
            assert (one.owned, two.owned) == (owned1, owned2)
        finally:
            await bus2.stopService()
        # node2 gone: its tokens come back to node1 at once.
        await wait_until(lambda: len(one.owned) == P, 10, "node1 to take every partition back")
        assert one.counters.get("takeovers") == P + P // 2
        assert not two.owned
        # A clean stop hands the tokens on (listeners finish first), then closes.
        assert journal2.events[-2:] == [("releasing", owned2), ("lost", owned2)]
        assert two.counters.get("partitions_handed_on") == len(owned2)
    finally:
        await bus1.stopService()
    assert not one.owned


@pytest_twisted.ensureDeferred
async def test_tokens_refreshed_stay_with_their_owner(prefix, write_settings):
    path = write_settings()
    bus1, one, journal1 = await _node(path, "node1", prefix, token_refresh=0.5,
                                      balance_interval=3600)
    await wait_until(lambda: len(one.owned) == P, 15, "node1 to own every partition")
    bus2, two, journal2 = await _node(path, "node2", prefix, token_refresh=0.5,
                                      balance_interval=3600)
    try:
        await sleep(3)  # six refreshes: each token goes back to the active consumer
        assert len(one.owned) == P and not two.owned
        assert one.counters.get("takeovers") == P
        assert one.counters.get("partitions_lost") == 0
        assert [kind for kind, _ in journal1.events] == ["gained"]
    finally:
        await bus2.stopService()
        await bus1.stopService()


class Owner:
    """An owner (``IPartitionOwner``) recording what it prepares and forgets."""

    def __init__(self) -> None:
        self.prepared: set[int] = set()
        self.forgotten: list[frozenset] = []

    def prepare(self, partitions):
        self.prepared |= partitions

    def forget(self, partitions, handed_on):
        self.prepared -= partitions
        self.forgotten.append(frozenset(partitions))


class Handled:
    """A handler noting which partitions it saw each host in, while prepared."""

    def __init__(self, owner: Owner) -> None:
        self.owner = owner
        self.hosts: list[str] = []
        self.unprepared: list[str] = []

    def handle(self, message, delivery):
        self.hosts.append(message.host)
        if partition_of(message.host, P) not in self.owner.prepared:
            self.unprepared.append(message.host)


def _perf(host: str):
    from connector import messages

    return messages.Perf(source="test@testnode", host=host, address="127.0.0.1",
                         device_type="test", metrics=[])


async def _partitioned_node(path: str, name: str, prefix: str):
    from types import SimpleNamespace

    from twisted.internet import reactor

    from connector.ownership import IPartitionOwner, PartitionQueues
    from connector.settings import load_settings

    bus = await start_bus(path, app_id=name)
    runtime = SimpleNamespace(settings=load_settings(path), bus=bus)
    holder = TokenHolder("alerter", P, prefix, Counters(name), reactor, node=name,
                         balance_interval=0.5, status_interval=1.0)
    owner = Owner()
    verifyObject(IPartitionOwner, owner, tentative=True)
    handler = Handled(owner)
    PartitionQueues(runtime, "alerter", handler, owner, holder)
    bus.connection.add_subscriber(holder)
    return bus, holder, owner, handler


@pytest_twisted.ensureDeferred
async def test_partition_queues_follow_ownership(prefix, write_settings):
    from twisted.internet import defer

    path = write_settings(bus={"partitions": str(P)})
    bus1, one, owner1, handled1 = await _partitioned_node(path, "node1", prefix)
    await wait_until(lambda: len(one.owned) == P, 15, "node1 to own every partition")
    bus2, two, owner2, handled2 = await _partitioned_node(path, "node2", prefix)
    hosts = [f"host{i}" for i in range(40)]
    try:
        await wait_until(lambda: len(one.owned) == len(two.owned) == P // 2, 30,
                         "the partitions to be shared 4/4")
        await sleep(1)  # node2's queues are consumed once prepared
        await defer.gatherResults([bus1.publisher("t").publish(_perf(h))
                                   for i, h in enumerate(hosts)])
        await wait_until(lambda: len(handled1.hosts) + len(handled2.hosts) == len(hosts), 15,
                         "every message handled")
        assert sorted(handled1.hosts + handled2.hosts) == sorted(hosts)
        assert all(one.owns("alerter", h) for h in handled1.hosts)
        assert all(two.owns("alerter", h) for h in handled2.hosts)
        assert handled1.unprepared == handled2.unprepared == []
        assert handled2.hosts, "node2 handled none of its hosts"
    finally:
        await bus2.stopService()
    # node2 stopped: node1 prepares its partitions again, then gets their messages.
    await wait_until(lambda: len(one.owned) == P, 10, "node1 to take every partition back")
    try:
        await wait_until(lambda: owner1.prepared == set(range(P)), 10, "node1 to prepare")
        before = len(handled1.hosts)
        await defer.gatherResults([bus1.publisher("t").publish(_perf(h))
                                   for i, h in enumerate(hosts)])
        await wait_until(lambda: len(handled1.hosts) - before >= len(hosts), 15,
                         "node1 to handle every host")
        assert sorted(handled1.hosts[before:]) == sorted(hosts)
        assert handled1.unprepared == []
        assert owner2.forgotten and owner2.prepared == set()
    finally:
        await bus1.stopService()


@pytest_twisted.ensureDeferred
async def test_a_drained_node_hands_everything_on_and_takes_nothing(prefix, write_settings):
    path = write_settings()
    bus1, one, _ = await _node(path, "node1", prefix, balance_interval=0.5)
    await wait_until(lambda: len(one.owned) == P, 15, "node1 to own every partition")
    bus2, two, journal2 = await _node(path, "node2", prefix, balance_interval=0.5)
    try:
        await wait_until(lambda: len(two.owned) == P // 2, 30, "node2 to get its share")
        handed = two.owned
        await two.drain()
        assert not two.owned
        assert ("releasing", handed) in journal2.events
        await wait_until(lambda: len(one.owned) == P, 10, "node1 to take the drained share")
        await sleep(2)  # four balance rounds: node1 counts itself alone, node2 takes nothing
        assert len(one.owned) == P and not two.owned
        assert one.members == 1
    finally:
        await bus2.stopService()
        await bus1.stopService()
