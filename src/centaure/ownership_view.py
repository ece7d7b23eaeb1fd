"""Who owns which partitions, as ``centaure status`` shows it (several nodes).

With ``[bus] partitions = P`` every heartbeat carries its process's
ownership: for each role (``snmp``, ``correlator``, ``alerter``,
``notifier``) the partitions its node holds the token of, and how many live
nodes of that role the broker counted. :func:`summarise` turns the latest
heartbeats into, per role, the live nodes and what each owns, the
partitions no live node owns, and whether the nodes agree on P.
:func:`ownership_report` prints it; it is empty on a single node (no
heartbeat carries an ownership), so ``centaure status`` looks as before.

What a heartbeat says is as old as the heartbeat (``status_interval``): for
a moment after a takeover a partition may show twice or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from connector import messages
from connector.status import format_table

__all__ = ["NodeOwnership", "RoleOwnership", "ownership_report", "summarise"]

#: Roles in the order they are shown; a role not listed here follows, by name.
ROLE_ORDER = ("snmp", "correlator", "alerter", "notifier")


@dataclass(frozen=True)
class NodeOwnership:
    """One live process's share of one role."""

    node: str
    pid: int
    partitions: int
    owned: tuple[int, ...]
    #: Live nodes of the role the broker counted, as this node last saw it.
    members: int
    #: Devices the poller owns (role ``snmp`` only; None when not reported).
    devices: int | None = None


@dataclass
class RoleOwnership:
    """What the live nodes of one role own."""

    role: str
    nodes: list[NodeOwnership] = field(default_factory=list)
    #: P as the role's last heartbeats said, when none of its nodes is live any more.
    last_partitions: int = 0

    @property
    def partition_counts(self) -> dict[int, list[str]]:
        """P -> the nodes that run with it (more than one key: they disagree)."""
        counts: dict[int, list[str]] = {}
        for n in self.nodes:
            counts.setdefault(n.partitions, []).append(n.node)
        return counts

    @property
    def partitions(self) -> int:
        """P of the role (the largest one seen when the nodes disagree)."""
        return max((n.partitions for n in self.nodes), default=self.last_partitions)

    def unowned(self, partitions: int | None = None) -> list[int]:
        """The partitions 0..P-1 no live node owns."""
        total = self.partitions if partitions is None else partitions
        owned = set().union(*(n.owned for n in self.nodes)) if self.nodes else set()
        return [p for p in range(total) if p not in owned]

    def doubly_owned(self) -> list[int]:
        """Partitions two live nodes both say they own (a takeover in flight, or a hung node)."""
        seen: set[int] = set()
        twice: set[int] = set()
        for n in self.nodes:
            twice |= seen & set(n.owned)
            seen |= set(n.owned)
        return sorted(twice)


def _live(statuses: Iterable[messages.Status], now: float, interval: float,
          lost_after: int) -> tuple[list[messages.Status], list[messages.Status]]:
    """The newest heartbeat per (connector, node): (live ones, stopped or lost ones)."""
    latest: dict[tuple[str, str], messages.Status] = {}
    for s in statuses:
        key = (s.connector, s.node)
        if key not in latest or latest[key].ts < s.ts:
            latest[key] = s
    live, gone = [], []
    for s in latest.values():
        alive = s.state != "stopping" and now - s.ts <= lost_after * interval
        (live if alive else gone).append(s)
    return live, gone


def summarise(statuses: Iterable[messages.Status], now: float, interval: float,
              lost_after: int) -> list[RoleOwnership]:
    """Per role seen with partitions: the live nodes and what each owns.

    A process running several connectors (``centaure-all``) sends the same
    ownership in each connector's heartbeat: it counts once, from its newest
    heartbeat. A role whose every node is lost or stopped is still listed,
    with no node (all its partitions without an owner) and the P it had.
    """
    live, gone = _live(statuses, now, interval, lost_after)
    newest: dict[tuple[str, str, int], tuple[float, messages.Ownership]] = {}
    devices: dict[tuple[str, int], int] = {}
    for s in live:
        if s.connector == "snmp" and "devices" in s.counters:
            devices[(s.node, s.pid)] = int(s.counters["devices"])
        for role, o in (s.ownership or {}).items():
            key = (role, s.node, s.pid)
            if key not in newest or newest[key][0] < s.ts:
                newest[key] = (s.ts, o)
    roles: dict[str, RoleOwnership] = {}
    for (role, node, pid), (_, o) in sorted(newest.items()):
        roles.setdefault(role, RoleOwnership(role)).nodes.append(NodeOwnership(
            node=node, pid=pid, partitions=o.partitions, owned=tuple(sorted(set(o.owned))),
            members=o.members, devices=devices.get((node, pid)) if role == "snmp" else None))
    # Roles whose nodes are all gone: their partitions have no owner at all.
    last_p: dict[str, int] = {}
    for s in sorted(gone, key=lambda s: s.ts):
        for role, o in (s.ownership or {}).items():
            last_p[role] = o.partitions
    for role, partitions in last_p.items():
        roles.setdefault(role, RoleOwnership(role, last_partitions=partitions))
    order = {r: i for i, r in enumerate(ROLE_ORDER)}
    return sorted(roles.values(), key=lambda r: (order.get(r.role, len(order)), r.role))


def ranges(parts: Iterable[int]) -> str:
    """``0-3,7,9-10``: a short text for a set of partitions."""
    items = sorted(set(parts))
    out: list[str] = []
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        out.append(f"{items[i]}-{items[j]}" if j > i else f"{items[i]}")
        i = j + 1
    return ",".join(out) or "none"


def _role_lines(r: RoleOwnership) -> list[str]:
    if not r.nodes:
        return [f"{r.role}: no live node: all {r.partitions} partitions without an owner"]
    lines = []
    counts = r.partition_counts
    if len(counts) > 1:
        said = "; ".join(f"{p} ({', '.join(sorted(nodes))})" for p, nodes in sorted(counts.items()))
        lines.append(f"{r.role}: nodes disagree on [bus] partitions: {said}")
    unowned = r.unowned()
    if r.partitions == 1 and not unowned:
        # One token (the notifier): active/standby.
        active = sorted(n.node for n in r.nodes if n.owned)
        lines.append(f"{r.role}: active on {', '.join(active)}, "
                     f"{len(r.nodes) - len(active)} standing by")
    elif unowned:
        lines.append(f"{r.role}: {len(unowned)} of {r.partitions} partitions without an owner: "
                     f"{ranges(unowned)}")
    else:
        lines.append(f"{r.role}: every one of {r.partitions} partitions owned, "
                     f"by {len(r.nodes)} node{'s' if len(r.nodes) != 1 else ''}")
    twice = r.doubly_owned()
    if twice:
        lines.append(f"{r.role}: {len(twice)} partitions claimed by two nodes (a takeover in "
                     f"progress or a hung node): {ranges(twice)}")
    return lines


def ownership_report(statuses: Iterable[messages.Status], now: float, interval: float,
                     lost_after: int) -> str:
    """The ownership part of ``centaure status``; "" when no heartbeat carries one."""
    roles = summarise(statuses, now, interval, lost_after)
    if not roles:
        return ""
    rows = [("ROLE", "NODE", "PID", "OWNS", "DEVICES", "NODES SEEN")]
    for r in roles:
        for n in r.nodes:
            rows.append((r.role, n.node, str(n.pid), f"{len(n.owned)}/{n.partitions}",
                         "-" if n.devices is None else str(n.devices), str(n.members)))
    text = format_table(rows) if len(rows) > 1 else ""
    summary = [line for r in roles for line in _role_lines(r)]
    return "\n".join(([text, ""] if text else []) + summary)
