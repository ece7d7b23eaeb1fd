"""The trap service's decisions on a fake clock: rate limit, storm summary, dedup, hosts."""

from __future__ import annotations

import dataclasses

from connector_traps.model import Trap
from tests.unit.trap_service_support import make_service

LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"


def make(tmp_path, **traps):
    service, clock, events, _config = make_service(tmp_path, **traps)
    return service, clock, events


def trap(source="10.0.0.1", index=1, oid=LINK_DOWN, t=0.0) -> Trap:
    return Trap(source=(source, 40000), version="v2c", pdu="trap", trap_oid=oid, uptime=5,
                agent_address=source, received=t,
                varbinds=((f"1.3.6.1.2.1.2.2.1.1.{index}", "Integer", index),))


def settle(clock):
    for _ in range(5):
        clock.advance(0)


def test_rate_limit_and_one_storm_summary(tmp_path):
    service, clock, events = make(tmp_path, rate_limit="10", rate_burst="20", dedup_window="0")
    for i in range(100):  # a burst from one source
        service.handle(trap(index=i))
    settle(clock)
    assert len(events.seen) == 20  # the burst allowance
    assert service.counters.get("rate_limited") == 80
    assert all(e.host == "sw1" and e.name == "linkDown" for e in events.seen)
    # Quiet for a while: one summary event says how many were dropped.
    for _ in range(8):
        clock.advance(10)
        service._publish_storm_summaries()
    settle(clock)
    storms = [e for e in events.seen if e.name == "trapStorm"]
    assert len(storms) == 1
    assert storms[0].host == "sw1" and storms[0].message.startswith("80 traps dropped from 10.0.0.1")


def test_duplicates_within_the_window_are_dropped(tmp_path):
    service, clock, events = make(tmp_path, rate_limit="0", dedup_window="10s")
    service.handle(trap(index=3))
    service.handle(trap(index=3))   # same source, trap and key: duplicate
    service.handle(trap(index=4))   # another interface: not a duplicate
    clock.advance(11)
    service.handle(trap(index=3))   # after the window: published again
    settle(clock)
    assert [e.key for e in events.seen] == ["3", "4", "3"]
    assert service.counters.get("duplicates") == 1


def test_unknown_sender_published_by_address_or_dropped(tmp_path):
    service, clock, events = make(tmp_path, rate_limit="0", dedup_window="0")
    service.handle(trap(source="192.0.2.9"))
    settle(clock)
    assert events.seen[0].host == "192.0.2.9" and events.seen[0].unknown_sender is True
    service2, clock2, events2 = make(tmp_path, rate_limit="0", dedup_window="0",
                                     map_unknown="false")
    service2.handle(trap(source="192.0.2.9"))
    settle(clock2)
    assert events2.seen == [] and service2.counters.get("unknown_sender_dropped") == 1


def test_same_trap_of_two_hosts_from_one_relay_both_published(tmp_path):
    service, clock, events = make(tmp_path, rate_limit="0", dedup_window="10s")
    for agent in ("10.0.0.1", "10.0.0.2", "10.0.0.1"):   # relayed by 192.0.2.7; the last a repeat
        service.handle(dataclasses.replace(trap(source="192.0.2.7", index=3),
                                           agent_address=agent))
    settle(clock)
    assert [(e.host, e.key) for e in events.seen] == [("sw1", "3"), ("10.0.0.2", "3")]
    assert service.counters.get("duplicates") == 1
