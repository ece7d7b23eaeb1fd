"""``centaure status`` with several nodes: who owns which partitions (pure logic)."""

from __future__ import annotations

from centaure.ownership_view import ownership_report, ranges, summarise
from connector import messages


def beat(connector, node, ts, ownership=None, state="ok", pid=None, counters=None):
    return messages.Status(
        source=f"{connector}@{node}", ts=ts, connector=connector, node=node,
        pid=pid if pid is not None else hash(node) % 10_000, version="0.1", state=state,
        uptime=5, counters=counters or {},
        ownership={role: messages.Ownership(partitions=p, owned=list(owned), members=m)
                   for role, (p, owned, m) in ownership.items()} if ownership else None)


def by_role(roles):
    return {r.role: r for r in roles}


def test_single_node_heartbeats_add_nothing():
    statuses = [beat("snmp", "n1", 195), beat("db", "n1", 196)]
    assert summarise(statuses, now=200, interval=10, lost_after=3) == []
    assert ownership_report(statuses, now=200, interval=10, lost_after=3) == ""


def test_live_nodes_their_share_devices_and_unowned_partitions():
    statuses = [
        beat("snmp", "n1", 190, {"snmp": (8, [0, 1, 2], 3)}, counters={"devices": 300}),
        beat("snmp", "n1", 195, {"snmp": (8, [0, 1, 2, 3], 3)}, counters={"devices": 410}),
        beat("snmp", "n2", 194, {"snmp": (8, [4, 5], 3)}, counters={"devices": 190}),
        # n3 owned 6 and 7 but has been silent for 60 s: lost, its partitions unowned.
        beat("snmp", "n3", 140, {"snmp": (8, [6, 7], 3)}, counters={"devices": 200}),
        beat("correlator", "n1", 196, {"correlator": (8, range(8), 1)}),
    ]
    roles = by_role(summarise(statuses, now=200, interval=10, lost_after=3))
    assert list(roles) == ["snmp", "correlator"]
    snmp = roles["snmp"]
    assert [(n.node, n.owned, n.devices, n.members) for n in snmp.nodes] == [
        ("n1", (0, 1, 2, 3), 410, 3), ("n2", (4, 5), 190, 3)]
    assert snmp.unowned() == [6, 7]
    assert roles["correlator"].unowned() == []
    assert roles["correlator"].nodes[0].devices is None

    report = ownership_report(statuses, now=200, interval=10, lost_after=3)
    header, *rows = report.splitlines()
    assert header.split() == ["ROLE", "NODE", "PID", "OWNS", "DEVICES", "NODES", "SEEN"]
    assert rows[0].split()[:2] == ["snmp", "n1"] and rows[0].split()[3:5] == ["4/8", "410"]
    assert "snmp: 2 of 8 partitions without an owner: 6-7" in report
    assert "correlator: every one of 8 partitions owned, by 1 node" in report
    assert "disagree" not in report and "claimed by two" not in report


def test_one_process_with_several_connectors_counts_once():
    # centaure-all: every connector's heartbeat carries the process's ownership.
    own = {"alerter": (4, [0, 1], 2), "notifier": (1, [0], 2)}
    statuses = [beat(c, "n1", 195, own, pid=7) for c in ("snmp", "db", "correlator", "alerter")]
    statuses.append(beat("alerter", "n2", 196, {"alerter": (4, [2], 2), "notifier": (1, [], 2)},
                         pid=8))
    roles = by_role(summarise(statuses, now=200, interval=10, lost_after=3))
    assert [n.node for n in roles["alerter"].nodes] == ["n1", "n2"]
    assert roles["alerter"].unowned() == [3]
    assert [(n.node, n.owned) for n in roles["notifier"].nodes] == [("n1", (0,)), ("n2", ())]
    assert roles["notifier"].unowned() == []
    report = ownership_report(statuses, now=200, interval=10, lost_after=3)
    assert "notifier: active on n1, 1 standing by" in report


def test_nodes_that_disagree_on_the_number_of_partitions_are_named():
    statuses = [beat("correlator", "n1", 195, {"correlator": (64, range(0, 32), 2)}),
                beat("correlator", "n2", 195, {"correlator": (32, range(0, 16), 2)})]
    report = ownership_report(statuses, now=200, interval=10, lost_after=3)
    assert "correlator: nodes disagree on [bus] partitions: 32 (n2); 64 (n1)" in report
    # Measured against the largest P: 32..63 have no owner.
    assert "correlator: 32 of 64 partitions without an owner: 32-63" in report
    assert "correlator: 16 partitions claimed by two nodes" in report


def test_a_stopped_node_owns_nothing_and_a_role_with_no_live_node_is_named():
    statuses = [
        beat("snmp", "n1", 195, {"snmp": (4, [0, 1], 2)}),
        beat("snmp", "n2", 190, {"snmp": (4, [2, 3], 2)}, state="stopping"),
        beat("correlator", "n2", 100, {"correlator": (4, range(4), 1)}),  # lost
    ]
    roles = by_role(summarise(statuses, now=200, interval=10, lost_after=3))
    assert roles["snmp"].unowned() == [2, 3]
    assert roles["correlator"].nodes == [] and roles["correlator"].unowned() == [0, 1, 2, 3]
    report = ownership_report(statuses, now=200, interval=10, lost_after=3)
    assert "correlator: no live node: all 4 partitions without an owner" in report


def test_ranges():
    assert ranges([]) == "none"
    assert ranges([3, 0, 1, 2, 7, 9, 10]) == "0-3,7,9-10"
