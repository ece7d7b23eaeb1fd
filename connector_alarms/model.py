"""The correlator's state: every alarm of a host, kept together with the host.

All the state of one host lives in one :class:`HostState`: its alarms
(active, and cleared ones kept for a while to order late messages), the
timestamp of its last applied snapshot and the window of message ids
already applied. Nothing global besides the ``ref -> host`` index that the
state provider keeps: a later HA issue can give each correlator a share of
the hosts and move a host by moving its one ``HostState``.

Times are producer timestamps (UNIX seconds, float) unless said otherwise:
ordering decisions use the ``ts`` of the message that caused a change, not
the time it arrived.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "AlarmRecord", "HostState", "HostStates", "Origin", "SEVERITIES", "severity_rank",
    "SEEN_IDS_PER_HOST", "UNREACHABLE",
]

Origin = Literal["trap", "poll", "threshold"]

#: Severities, lowest first (DESIGN's ``Severity`` values).
SEVERITIES: tuple[str, ...] = ("info", "warning", "minor", "major", "critical")

#: Name and identity of the poller's "device does not answer" alarm.
UNREACHABLE = "unreachable"

#: Message ids remembered per host (redeliveries change nothing).
SEEN_IDS_PER_HOST = 1024


def severity_rank(severity: str) -> int:
    """0 for info up to 4 for critical (unknown names rank lowest)."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        return 0


@dataclass
class AlarmRecord:
    """One alarm (one reduction key) and everything the correlator knows of it."""

    ref: int
    host: str
    name: str
    #: The identifying part of the reduction key (trap key, table row key, rule+indexes).
    identity: str
    origin: Origin
    #: Severity as published: ``base_severity``, or the topology's lowered one when masked.
    severity: str
    #: Severity as the source last reported it.
    base_severity: str
    message: str
    active: bool
    first_seen: float
    last_seen: float
    count: int = 1
    cleared_at: float | None = None
    #: Why it was cleared: trap, snapshot, threshold, operator or expired.
    clear_reason: str | None = None
    #: Producer ts of the raise or clear that last changed ``active`` (ordering guard).
    changed_ts: float = 0.0
    acked_by: str | None = None
    acked_at: float | None = None
    #: Operator notes: [ts, user, text] lists (JSON-friendly).
    notes: list[list] = field(default_factory=list)
    flapping: bool = False
    #: Recent states for flap detection, oldest first: 1 raised, 0 cleared.
    history: list[int] = field(default_factory=list)
    #: The parent's alarm that masks this one (topology), if any.
    cause_ref: int | None = None
    #: Local time (reactor clock) of the last published message, for the update interval.
    published_at: float = 0.0
    #: A change (count, last_seen) not published yet because of the update interval.
    pending_update: bool = False
    #: Messages published for this ref so far: the next one's id is ``alarm:<ref>:<seq>``.
    seq: int = 0


@dataclass
class HostState:
    """Every alarm of one host, and what orders the host's messages."""

    host: str
    alarms: dict[int, AlarmRecord] = field(default_factory=dict)
    #: Producer ts of the last applied snapshot; older snapshots are ignored.
    snapshot_ts: float = 0.0
    #: Message ids already applied, oldest first (bounded by SEEN_IDS_PER_HOST).
    seen_ids: OrderedDict[str, None] = field(default_factory=OrderedDict)
    #: Changed since last persisted (set by the correlator, cleared by the store).
    dirty: bool = False

    def seen(self, message_id: str | None) -> bool:
        """True if ``message_id`` was applied already; else remember it."""
        if not message_id:
            return False
        if message_id in self.seen_ids:
            return True
        self.seen_ids[message_id] = None
        while len(self.seen_ids) > SEEN_IDS_PER_HOST:
            self.seen_ids.popitem(last=False)
        return False

    def active(self) -> list[AlarmRecord]:
        """The active alarms of this host."""
        return [a for a in self.alarms.values() if a.active]


class HostStates(Protocol):
    """Where the correlator finds host states (in memory today; a shard tomorrow)."""

    def get(self, host: str) -> HostState:
        """The state of ``host`` (created empty if unknown)."""

    def host_of(self, ref: int) -> str | None:
        """The host of alarm ``ref``, if this correlator knows it."""

    def index(self, record: AlarmRecord) -> None:
        """Remember ``record.ref -> record.host`` (called when an alarm is created)."""

    def hosts(self) -> list[str]:
        """Every host with a state here."""

    def forget(self, ref: int) -> None:
        """Drop ``ref`` from the index (called when a cleared alarm is forgotten)."""
