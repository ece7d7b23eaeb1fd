"""Hosts to partitions, partitioned routing keys and queues (pure logic)."""

from __future__ import annotations

import collections
import zlib

import pytest

from connector import messages
from connector.amqp.tokens import _ranges
from connector.partitions import fair_share, partition_of, partitions_of
from connector.topology import members_queue, partition_queue, token_queue, topic_matches


def test_partition_is_stable_across_processes_and_releases() -> None:
    # The value every node computes: CRC-32 of the UTF-8 name, modulo P. A
    # change here re-homes every host of every deployment: pinned on purpose.
    assert partition_of("router01", 64) == zlib.crc32(b"router01") % 64 == 51
    assert partition_of("é.example.net", 7) == zlib.crc32("é.example.net".encode()) % 7


def test_hosts_spread_evenly_enough() -> None:
    counts = collections.Counter(partition_of(f"sw{i:05d}.dc1.example.net", 64)
                                 for i in range(10_000))
    assert len(counts) == 64
    # 10,000 hosts over 64 partitions: ~156 each; none below half or above 1.5x.
    assert min(counts.values()) > 78 and max(counts.values()) < 234


def test_partitions_of_groups_hosts() -> None:
    grouped = partitions_of(["a", "b", "c", "d"], 2)
    assert sorted(h for hs in grouped.values() for h in hs) == ["a", "b", "c", "d"]
    assert all(partition_of(h, 2) == p for p, hs in grouped.items() for h in hs)


def test_partition_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        partition_of("a", 0)


@pytest.mark.parametrize("partitions,members,share", [(64, 1, 64), (64, 3, 22), (8, 2, 4),
                                                       (1, 2, 1), (8, 0, 8)])
def test_fair_share(partitions: int, members: int, share: int) -> None:
    assert fair_share(partitions, members) == share


def _event(host: str) -> messages.Event:
    return messages.Event(source="traps@n1", host=host, address="192.0.2.1", snmp_version="v2c",
                          trap_oid="1.3.6.1.6.3.1.1.5.3", name="linkDown", severity="major",
                          varbinds=[])


def test_routing_key_carries_the_partition_only_when_partitioned() -> None:
    event = _event("router01.example.net")
    assert messages.routing_key(event) == "event.router01.example.net"
    p = partition_of("router01.example.net", 64)
    assert messages.routing_key(event, 64) == f"event.{p}.router01.example.net"
    command = messages.AlarmCommand(source="cli@n1", ref=1, action="ack", user="ops")
    assert messages.routing_key(command, 64) == "alarm_command._"
    status = messages.Status(source="snmp@n1", connector="snmp", node="n1", pid=1, version="1",
                             state="ok", uptime=1.0, counters={})
    assert messages.routing_key(status, 64) == "status.n1"


def test_each_partitioned_key_reaches_exactly_its_partition_queue() -> None:
    queues = [partition_queue("c", "correlator", p) for p in range(8)]
    for host in ("a", "router01.example.net", "10.0.0.1"):
        key = messages.routing_key(_event(host), 8)
        hits = [q.name for q in queues for b in q.bindings
                if b.exchange == "c.event" and topic_matches(b.pattern, key)]
        assert hits == [f"c.correlator.p{partition_of(host, 8)}"]
    # Host-less commands have a home: partition 0.
    hits = [q.name for q in queues for b in q.bindings
            if b.exchange == "c.alarm_command" and topic_matches(b.pattern, "alarm_command._")]
    assert hits == ["c.correlator.p0"]


def test_partition_and_token_queues_arguments() -> None:
    queue = partition_queue("c", "alerter", 3)
    assert queue.arguments["x-single-active-consumer"] is True
    assert queue.arguments["x-queue-type"] == "quorum"
    token = token_queue("c", "snmp", 5)
    assert token.name == "c.token.snmp.5"
    # The owner hands its token back to itself regularly: no delivery limit.
    assert "x-delivery-limit" not in token.arguments
    assert token.arguments["x-single-active-consumer"] is True
    # Members are counted by the broker: no single active consumer there.
    assert "x-single-active-consumer" not in members_queue("c", "snmp").arguments


@pytest.mark.parametrize("parts,text", [([], "none"), ([3], "3"), ([0, 1, 2, 5, 7, 8], "0-2,5,7-8")])
def test_ranges(parts: list[int], text: str) -> None:
    assert _ranges(parts) == text


def test_channel_numbers_are_used_again_lowest_first() -> None:
    from connector.amqp.subscriber import ChannelIds

    ids = ChannelIds(first=2, last=5)
    assert [ids.take() for _ in range(4)] == [2, 3, 4, 5]
    with pytest.raises(RuntimeError, match="no AMQP channel left"):
        ids.take()
    ids.give_back(4)
    ids.give_back(3)
    assert ids.take() == 3 and ids.take() == 4
